"""`ordersys runs reexecute` for every job of the code location, partitioned and not.

Each parent run fails for real in an instance on disk (the database or Redis it was given does
not answer: a closed port), the service comes back, and the CLI re-executes the run: the new run
is the parent's re-execution (parent and root ids), of the same job, with the parent's partition
or day range, file and stage tags and run config, and it succeeds.
"""

from __future__ import annotations

import dataclasses
import socket
from datetime import date

import dagster as dg
import pytest
from click.testing import CliRunner
from refunds_support import make_order
from sqlalchemy import func, select

from ordersys_pipelines.assets.analytics import DAILY_KPIS, build_analytics, materialize_days
from ordersys_pipelines.assets.imports import file_tags, orders_csv
from ordersys_pipelines.cli import instance_home, main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import orders, products, refunds
from ordersys_pipelines.definitions import build_defs
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.domain.imports.generate import generate_orders, write_catalog
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.settings import Settings

KEPT_TAGS = ("dagster/partition", "dagster/asset_partition_range_start", "dagster/asset_partition_range_end",
             "ordersys/file", "ordersys/stage")
DAY = date(2025, 3, 10)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def env(sqlite_url, redis_resource, tmp_path, monkeypatch) -> Settings:
    home = instance_home.write(tmp_path / "dagster_home")  # the project's dagster.yaml, SQLite storage
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, value in {
        "DAGSTER_HOME": str(home), "ORDERSYS_DATABASE_URL": sqlite_url, "ORDERSYS_REDIS_URL": redis_resource.url,
        "ORDERSYS_REDIS_PREFIX": redis_resource.key_prefix, "ORDERSYS_INBOX": str(inbox),
        "ORDERSYS_KPI_START_DATE": "2025-01-01", "ORDERSYS_GATEWAY_SEED": "3",
        "ORDERSYS_STEP_RETRIES": "0",  # a transient failure fails the parent at once
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    return Settings.from_env()


def _down(settings: Settings, service: str) -> Settings:
    closed = _closed_port()
    if service == "database":
        return dataclasses.replace(settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed}/ordersys")
    return dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed}/0")


def _failed_parent(settings: Settings, instance, job_name: str, service: str = "database", **run) -> dg.DagsterRun:
    job = build_defs(_down(settings, service)).resolve_job_def(job_name)
    result = job.execute_in_process(instance=instance, raise_on_error=False, **run)
    assert not result.success
    return result.dagster_run


def _reexecute(instance, parent: dg.DagsterRun, *args: str) -> dg.DagsterRun:
    result = CliRunner().invoke(main, ["runs", "reexecute", parent.run_id, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    parent = instance.get_run_by_id(parent.run_id)  # as stored, with the tags its steps added
    [child] = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": parent.run_id}), limit=1)
    assert child.status == dg.DagsterRunStatus.SUCCESS
    assert child.tags["dagster/root_run_id"] == (parent.root_run_id or parent.run_id)
    # Every tag the parent had is kept (a catalog run that failed before its step began has no stage
    # tag yet; its re-execution gains it as it runs).
    assert {k: child.tags.get(k) for k in KEPT_TAGS if k in parent.tags} == {
        k: v for k, v in parent.tags.items() if k in KEPT_TAGS}
    assert child.run_config == parent.run_config
    assert f"re-execution {child.run_id}" in result.output
    return child


def _order_file(settings: Settings, tmp_path) -> tuple[str, dict]:
    path = generate_orders(tmp_path / "march.csv", rows=30, seed=2, start=DAY, days=2).path
    key = partition_key(path.name, content_hash(path))
    config = {"ops": {"orders_csv": {"config": {"path": str(path)}}}}
    return key, config


def _order_count(settings: Settings) -> int:
    with get_engine(settings.database_url).connect() as conn:
        return conn.execute(select(func.count()).select_from(orders)).scalar_one()


def test_an_orders_import_keeps_its_partition_file_and_config(env, tmp_path):
    key, config = _order_file(env, tmp_path)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("order_files", [key])
        parent = _failed_parent(env, instance, "orders_import", partition_key=key, run_config=config,
                                tags=file_tags("march.csv"))
        assert parent.tags["dagster/partition"] == key and _order_count(env) == 0
        child = _reexecute(instance, parent)
        assert child.job_name == "orders_import"
        assert _order_count(env) > 0


def test_a_cli_import_of_the_ephemeral_asset_job_runs_again_as_orders_import(env, tmp_path):
    key, config = _order_file(env, tmp_path)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("order_files", [key])
        result = dg.materialize([orders_csv], partition_key=key, instance=instance, run_config=config,
                                resources=build_resources(_down(env, "database")), tags=file_tags("march.csv"),
                                raise_on_error=False)
        assert result.dagster_run.job_name == "__ephemeral_asset_job__" and not result.success
        child = _reexecute(instance, result.dagster_run)
        assert child.job_name == "orders_import" and _order_count(env) > 0


def test_a_catalog_load_keeps_its_file(env, tmp_path):
    path = tmp_path / "catalog.csv"
    write_catalog(path, products=20, stock=5)
    with dg.DagsterInstance.get() as instance:
        parent = _failed_parent(env, instance, "inventory_load",
                                run_config={"ops": {"product_catalog": {"config": {"path": str(path)}}}})
        _reexecute(instance, parent)
    with get_engine(env.database_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(products)).scalar_one() == 20


def test_a_kpi_day_range_and_a_single_day_keep_their_partitions(env):
    with dg.DagsterInstance.get() as instance:
        analytics = build_analytics(env)
        ranged = materialize_days(analytics, build_resources(_down(env, "redis")), DAY, date(2025, 3, 12),
                                  instance=instance)
        assert not ranged.success
        child = _reexecute(instance, ranged.dagster_run)
        assert child.tags["dagster/asset_partition_range_end"] == "2025-03-12"

        single = _failed_parent(env, instance, "analytics_refresh", service="redis", partition_key="2025-03-11")
        assert single.tags["dagster/partition"] == "2025-03-11"
        _reexecute(instance, single)


def test_a_ui_backfill_of_the_implicit_asset_job(env):
    with dg.DagsterInstance.get() as instance:
        job = build_defs(_down(env, "redis")).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=[DAILY_KPIS], raise_on_error=False,
                                        tags={"dagster/asset_partition_range_start": "2025-03-10",
                                              "dagster/asset_partition_range_end": "2025-03-11"})
        assert not result.success
        child = _reexecute(instance, result.dagster_run)
        assert child.job_name == "__ASSET_JOB" and child.asset_selection == {DAILY_KPIS}


@pytest.mark.parametrize("job_name", ["order_workflow", "payment_settlement", "refund_processing",
                                      "notification_dispatch"])
def test_a_batch_job(env, job_name):
    with dg.DagsterInstance.get() as instance:
        parent = _failed_parent(env, instance, job_name)
        child = _reexecute(instance, parent)
        assert child.job_name == job_name
        assert child.tags["ordersys/stage"] == parent.tags["ordersys/stage"]
        # From the failure: the failed step and the ones after it, nothing that had succeeded.
        failed = {e.step_key for e in instance.all_logs(parent.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)}
        assert failed and failed <= set(child.step_keys_to_execute or failed)


def test_a_refund_request_keeps_its_order_and_reference(env):
    make_order(get_engine(env.database_url), "O-7", total_cents=2_000)
    config = {"ops": {"request_refund_op": {"config": {"order_ref": "O-7", "reference": "R-7", "amount": "5.00"}}}}
    with dg.DagsterInstance.get() as instance:
        parent = _failed_parent(env, instance, "refund_request", run_config=config)
        _reexecute(instance, parent)
    with get_engine(env.database_url).connect() as conn:
        assert conn.execute(select(refunds.c.reference, refunds.c.amount_cents)).all() == [("R-7", 500)]


def test_every_job_is_covered_here(env):
    covered = {"orders_import", "inventory_load", "analytics_refresh", "__ASSET_JOB", "order_workflow",
               "payment_settlement", "refund_processing", "notification_dispatch", "refund_request"}
    assert {job.name for job in build_defs(env).get_repository_def().get_all_jobs()} == covered


def test_all_steps_again_after_success_and_clear_errors(env):
    with dg.DagsterInstance.get() as instance:
        parent = _failed_parent(env, instance, "notification_dispatch")
        child = _reexecute(instance, parent)
        again = CliRunner().invoke(main, ["runs", "reexecute", child.run_id])
        assert again.exit_code == 1 and "did not fail (SUCCESS)" in again.output and "--all-steps" in again.output
        third = _reexecute(instance, child, "--all-steps")
        assert third.tags["dagster/root_run_id"] == parent.run_id  # one run group
    missing = CliRunner().invoke(main, ["runs", "reexecute", "0" * 36])
    assert missing.exit_code == 1 and "no run 000" in missing.output


@dg.op
def elsewhere() -> None:
    raise RuntimeError("from another code location")


@dg.job
def retired_job() -> None:
    elsewhere()


def test_a_run_of_a_job_this_code_location_lacks_is_refused_with_the_reason(env):
    with dg.DagsterInstance.get() as instance:
        run_id = retired_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    result = CliRunner().invoke(main, ["runs", "reexecute", run_id])
    assert result.exit_code == 1
    assert f"run {run_id} is of job retired_job, which this code location does not have" in result.output


def test_a_cli_import_runs_as_orders_import_with_its_partition_and_file(env, tmp_path):
    path = generate_orders(tmp_path / "april.csv", rows=10, seed=4, start=DAY, days=1).path
    result = CliRunner().invoke(main, ["import", str(path), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
    assert run.job_name == "orders_import" and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == partition_key(path.name, content_hash(path))
    assert run.tags["ordersys/file"] == "april.csv" and run.tags["ordersys/stage"] == "import"
