"""`ordersys status` reads the Dagster instance's run storage without Dagster: the runs queued
and running per stage, and the failed runs nothing has healed since, with their cause. Checked
against what Dagster's own API reads from the same instance, on SQLite and PostgreSQL storage."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from test_production_instance import instance_database  # noqa: F401  (a fixture)

from ordersys_pipelines.cli import main
from ordersys_pipelines.cli.instance_runs import read_instance_runs
from ordersys_pipelines.step_retries import retry_transient

ROOT = Path(__file__).resolve().parents[1]
# Where a queued run would be launched from (the instance requires one; nothing launches it here).
ORIGIN = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ordersys"), "__repository__"), "stage_job")
STAGE = "ordersys/stage"


@dg.op(config_schema={"error": dg.Field(str, default_value="")})
def work(context):
    error = context.op_config["error"]
    if error.startswith("failure:"):
        raise dg.Failure(description=error.removeprefix("failure:"), allow_retries=False)
    if error:
        raise RuntimeError(error)


@dg.job
def stage_job() -> None:
    work()


@dg.op
@retry_transient
def refuse(context):
    """As the project's steps refuse bad input: a failure without retries, marked a data failure."""
    raise dg.Failure(description="march.csv: missing required column(s): unit_price", allow_retries=False)


@dg.job
def refusing_job() -> None:
    refuse()


def _run(instance, tags: dict, error: str = "") -> str:
    result = stage_job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False, run_config={"ops": {"work": {"config": {"error": error}}}})
    assert result.success == (not error)
    return result.run_id


def _fill(instance) -> dict[str, str]:
    """Failed runs, some healed by a later run, and runs waiting in the queue or running."""
    ids = {}
    file_tags = {STAGE: "import", "dagster/partition": "march.csv-1a2b3c4d5e6f", "ordersys/file": "march.csv"}
    ids["file_failed"] = _run(instance, file_tags, "failure:march.csv: no column unit_price\nfound: a, b")
    ids["file_again"] = _run(instance, file_tags)
    ids["reexecuted"] = _run(instance, {STAGE: "workflow"}, "database is locked")
    _run(instance, {STAGE: "workflow", "dagster/parent_run_id": ids["reexecuted"],
                    "dagster/root_run_id": ids["reexecuted"]})
    days = {STAGE: "analytics", "dagster/asset_partition_range_start": "2024-03-01",
            "dagster/asset_partition_range_end": "2024-03-05"}
    ids["days_failed"] = _run(instance, days, "redis went away")
    _run(instance, {**days, "dagster/asset_partition_range_start": "2024-02-01",
                    "dagster/asset_partition_range_end": "2024-03-31"})
    ids["stays"] = _run(instance, {STAGE: "settlement"}, "failure:gateway unreachable: connection refused\ntraceback")
    ids["other_partition"] = _run(instance, {**file_tags, "dagster/partition": "april.csv-0f0f0f0f0f0f"},
                                  "no such file")
    for event, stage in (("RUN_ENQUEUED", "refunds"), ("RUN_ENQUEUED", "refunds"), ("RUN_START", "notifications")):
        run = instance.create_run_for_job(stage_job, tags={STAGE: stage}, remote_job_origin=ORIGIN)
        # What the run queue and a run worker record (neither runs here).
        instance.run_storage.handle_run_event(
            run.run_id, dg.DagsterEvent(getattr(dg.DagsterEventType, event).value, job_name="stage_job"))
    return ids


@pytest.fixture(params=["sqlite", "pg"])
def instance_home(request, tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    if request.param == "pg":
        request.getfixturevalue("instance_database")  # sets DAGSTER_PG_URL to a database of its own
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_run_storage_read_directly_matches_dagster(instance_home):
    with dg.DagsterInstance.get() as instance:
        ids = _fill(instance)
        queued = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
        failed = {r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))}
        step_failure = instance.all_logs(ids["stays"], of_type=dg.DagsterEventType.STEP_FAILURE)[0]
        description = step_failure.dagster_event.step_failure_data.user_failure_data.description

    now = time.time()
    view = read_instance_runs(instance_home, since_epoch=now - 3600, now_epoch=now)
    assert sum(view.queued.values()) == queued == 2
    assert view.queued == {"refunds": 2} and view.running == {"notifications": 1}
    shown = {run.run_id: run for run in view.failed}
    assert set(shown) == {ids["stays"], ids["other_partition"]}
    assert failed - set(shown) == {ids["file_failed"], ids["reexecuted"], ids["days_failed"]}
    assert shown[ids["stays"]].cause == f"work: {description.splitlines()[0]}"
    assert shown[ids["stays"]].stage == "settlement"
    assert shown[ids["other_partition"]].cause == "work: RuntimeError: no such file"
    assert shown[ids["other_partition"]].subject == "april.csv-0f0f0f0f0f0f"
    assert [run.run_id for run in view.failed] == [ids["other_partition"], ids["stays"]]  # newest first


def test_status_shows_runs_and_their_causes(instance_home, sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ORDERSYS_INBOX", str(tmp_path / "inbox"))
    with dg.DagsterInstance.get() as instance:
        ids = _fill(instance)
    result = CliRunner().invoke(main, ["status"], catch_exceptions=False, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "gateway unreachable: connection refused" in result.output
    assert ids["stays"] in result.output and ids["file_failed"] not in result.output
    assert "ordersys runs reexecute RUN_ID" in result.output
    report = json.loads(CliRunner().invoke(main, ["status", "--json"], env={"COLUMNS": "250"}).output)
    stages = {s["stage"]: s for s in report["stages"]}
    assert (stages["refunds"]["runs_queued"], stages["notifications"]["runs_running"]) == (2, 1)
    assert report["runs_read"] and str(instance_home) in report["instance"]


def test_a_data_failure_says_fix_the_input_not_reexecute(instance_home, sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ORDERSYS_INBOX", str(tmp_path / "inbox"))
    with dg.DagsterInstance.get() as instance:
        refused = refusing_job.execute_in_process(instance=instance, raise_on_error=False, tags={STAGE: "import"})
    now = time.time()
    (failed,) = read_instance_runs(instance_home, since_epoch=now - 3600, now_epoch=now).failed
    assert (failed.run_id, failed.data_failure) == (refused.run_id, True)
    assert failed.cause == "refuse: march.csv: missing required column(s): unit_price"

    result = CliRunner().invoke(main, ["status"], catch_exceptions=False, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "bad input: fix it, re-executing fails the same way" in result.output
    assert "ordersys runs reexecute" not in result.output  # it would fail again

    with dg.DagsterInstance.get() as instance:  # a failure a re-execution may heal brings the advice back
        _run(instance, {STAGE: "workflow"}, "connection to the gateway reset")
    result = CliRunner().invoke(main, ["status"], catch_exceptions=False, env={"COLUMNS": "250"})
    assert "ordersys runs reexecute RUN_ID" in result.output


@dg.asset(pool="analytics")
def pooled_days() -> None:
    """Stands in for daily_kpis: only its pool matters here."""


def test_a_catalog_run_queued_without_a_stage_tag_counts_in_its_pool_stage(instance_home):
    catalog_job = dg.Definitions(assets=[pooled_days]).resolve_implicit_global_asset_job_def()
    origin = RemoteJobOrigin(ORIGIN.repository_origin, catalog_job.name)
    with dg.DagsterInstance.get() as instance:
        queued = instance.create_run_for_job(catalog_job, tags={"dagster/backfill": "b1"},
                                             status=dg.DagsterRunStatus.QUEUED, remote_job_origin=origin)
        plain = instance.create_run_for_job(stage_job, tags={}, status=dg.DagsterRunStatus.QUEUED,
                                            remote_job_origin=ORIGIN)
        assert "ordersys/stage" not in instance.get_run_by_id(queued.run_id).tags
    now = time.time()
    view = read_instance_runs(instance_home, since_epoch=now - 3600, now_epoch=now)
    assert view.queued == {"analytics": 1, "other": 1}, plain.run_id
