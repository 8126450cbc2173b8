"""A failed run reaches the operator through the notification channel (a real SMTP server):
once, after its last attempt, with advice that fits the failure."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from ordersys_pipelines.assets.imports import file_tags, order_files
from ordersys_pipelines.cli import instance_home
from ordersys_pipelines.definitions import build_defs
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.sensors.operations import (
    RETRY_GRACE_SECONDS,
    alert_text,
    missed_retries,
    operator_alert_on_failure,
    operator_alert_on_missed_retry,
)
from ordersys_pipelines.settings import Settings
from ordersys_pipelines.step_retries import retry_transient


@dg.op
def explode() -> None:
    raise RuntimeError("payment gateway unreachable")


@dg.job(tags={"ordersys/stage": "settlement"})
def failing_job() -> None:
    explode()


def test_failed_run_is_mailed_to_the_operator(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    notifier = NotifierResource(
        channel="email", smtp_host="127.0.0.1", smtp_port=smtp_server.port, operator_email="ops@example.com"
    )
    failure_event = result.get_run_failure_event()
    with dg.build_run_status_sensor_context(
        sensor_name="operator_alert_on_failure",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure_event,
        resources={"notifier": notifier},
    ) as context:
        operator_alert_on_failure(context.for_run_failure())

    [message] = smtp_server.messages
    assert "<ops@example.com>" in message["To"]
    assert f"failing_job failed ({result.run_id[:8]})" in message["Subject"]
    body = message.get_content()
    assert "payment gateway unreachable" in body
    assert f"ordersys runs reexecute {result.run_id}" in body
    assert "Stage: settlement" in body


def _alert(instance, run, failure_event, notifier):
    with dg.build_run_status_sensor_context(
        sensor_name="operator_alert_on_failure", dagster_instance=instance, dagster_run=run,
        dagster_event=failure_event, resources={"notifier": notifier},
    ) as context:
        return operator_alert_on_failure(context.for_run_failure())


def _mail(smtp_server) -> NotifierResource:
    return NotifierResource(channel="email", smtp_host="127.0.0.1", smtp_port=smtp_server.port,
                            operator_email="ops@example.com")


@pytest.fixture
def project_instance(sqlite_url, tmp_path, monkeypatch):
    """The project's dagster.yaml (run retries on) on SQLite storage, and a database and inbox."""
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ORDERSYS_INBOX", str(tmp_path / "inbox"))
    (tmp_path / "inbox").mkdir()
    home = instance_home.write(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_a_file_without_prices_fails_one_run_and_alerts_once_with_what_to_fix(project_instance, smtp_server):
    settings = Settings.from_env()
    path = settings.inbox / "march.csv"
    path.write_text("order_ref,order_date,customer_email,customer_name,sku,product_name,quantity\n"
                    "A1,2024-03-01,a@example.com,Ann,S1,Mug,3\n")
    key = partition_key(path.name, content_hash(path))
    project_instance.add_dynamic_partitions(order_files.name, [key])
    job = build_defs(settings).resolve_job_def("orders_import")
    result = job.execute_in_process(instance=project_instance, partition_key=key, tags=file_tags(path.name),
                                    raise_on_error=False)
    runs = project_instance.get_runs()
    assert [run.status for run in runs] == [dg.DagsterRunStatus.FAILURE]
    run = runs[0]
    assert run.tags["dagster/will_retry"] == "false"  # a data failure is not retried as a run
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)

    assert _alert(project_instance, run, result.get_run_failure_event(), _mail(smtp_server)) is None
    [message] = smtp_server.messages
    body = message.get_content()
    assert "step orders_csv (data): march.csv: missing required column(s): unit_price" in body
    assert "a re-execution would fail the same way" in body and "failed/march.csv" in body
    assert "ordersys runs reexecute" not in body
    assert f"Partition: {key}" in body


def test_no_alert_while_a_run_retry_is_coming_then_one_for_the_last_attempt(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ordersys"), "__repository__"),
                             "failing_job")
    launched = result.dagster_run._replace(remote_job_origin=origin)  # as the daemon launches runs
    retrying = launched.with_tags({**launched.tags, "dagster/will_retry": "true"})
    skipped = _alert(instance, retrying, result.get_run_failure_event(), _mail(smtp_server))
    assert isinstance(skipped, dg.SkipReason) and "will be retried" in skipped.skip_message
    assert smtp_server.messages == []

    last = launched.with_tags({**launched.tags, "dagster/will_retry": "false"})
    _alert(instance, last, result.get_run_failure_event(), _mail(smtp_server))
    assert len(smtp_server.messages) == 1
    # A run of the CLI (no code location origin) is never retried by Dagster, whatever its tag says.
    in_process = result.dagster_run.with_tags({**launched.tags, "dagster/will_retry": "true"})
    _alert(instance, in_process, result.get_run_failure_event(), _mail(smtp_server))
    assert len(smtp_server.messages) == 2


def _deferred_run(instance, smtp_server):
    """A failed run whose alert the failure sensor deferred for a coming run retry."""
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ordersys"), "__repository__"),
                             "failing_job")
    instance.add_run_tags(result.run_id, {"dagster/will_retry": "true"})
    launched = instance.get_run_by_id(result.run_id)._replace(remote_job_origin=origin)
    assert isinstance(_alert(instance, launched, result.get_run_failure_event(), _mail(smtp_server)), dg.SkipReason)
    assert instance.get_run_by_id(result.run_id).tags["ordersys/alert"] == "deferred"
    return result.run_id


def _look_for_missed_retries(instance, smtp_server):
    return operator_alert_on_missed_retry(
        dg.build_sensor_context(instance=instance, resources={"notifier": _mail(smtp_server)}))


def test_a_deferred_alert_is_sent_once_when_the_retry_daemon_gives_up(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    run_id = _deferred_run(instance, smtp_server)
    assert isinstance(_look_for_missed_retries(instance, smtp_server), dg.SkipReason)  # the retry may still come
    assert smtp_server.messages == []

    # The retry daemon failed to launch the retry: it flips the tag (auto_run_reexecution.py).
    instance.add_run_tags(run_id, {"dagster/will_retry": "false"})
    _look_for_missed_retries(instance, smtp_server)
    [message] = smtp_server.messages
    body = message.get_content()
    assert f"failing_job failed ({run_id[:8]})" in message["Subject"]
    assert "automatic retry was not launched" in body
    assert "step explode (error): RuntimeError: payment gateway unreachable" in body
    assert f"ordersys runs reexecute {run_id}" in body
    assert instance.get_run_by_id(run_id).tags["ordersys/alert"] == "sent"

    _look_for_missed_retries(instance, smtp_server)
    assert len(smtp_server.messages) == 1  # once


def test_a_deferred_alert_waits_out_the_grace_then_is_sent_when_no_retry_appeared(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    run_id = _deferred_run(instance, smtp_server)
    ended = instance.get_run_record_by_id(run_id).end_time
    assert missed_retries(instance, ended + RETRY_GRACE_SECONDS - 1) == []
    assert [run.run_id for run in missed_retries(instance, ended + RETRY_GRACE_SECONDS)] == [run_id]


def test_a_deferred_alert_is_left_to_the_retry_that_was_launched(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    run_id = _deferred_run(instance, smtp_server)
    failing_job.execute_in_process(instance=instance, raise_on_error=False,
                                   tags={"dagster/parent_run_id": run_id, "dagster/root_run_id": run_id})
    instance.add_run_tags(run_id, {"dagster/will_retry": "false"})
    assert missed_retries(instance, 1e12) == []
    assert instance.get_run_by_id(run_id).tags["ordersys/alert"] == "retried"
    assert isinstance(_look_for_missed_retries(instance, smtp_server), dg.SkipReason)
    assert smtp_server.messages == []


@dg.op
@retry_transient
def database_down(context) -> None:
    raise ConnectionRefusedError("connection to 127.0.0.1:1 refused")


@dg.job
def transient_job() -> None:
    database_down()


def test_a_transient_failure_after_its_retries_advises_a_reexecution(smtp_server, monkeypatch):
    monkeypatch.setenv("ORDERSYS_STEP_RETRIES", "1")
    monkeypatch.setenv("ORDERSYS_STEP_RETRY_DELAY", "0")
    instance = dg.DagsterInstance.ephemeral()
    result = transient_job.execute_in_process(instance=instance, raise_on_error=False)
    _alert(instance, result.dagster_run, result.get_run_failure_event(), _mail(smtp_server))
    [message] = smtp_server.messages
    body = message.get_content()
    assert "step database_down (transient)" in body and "connection to 127.0.0.1:1 refused" in body
    assert "did not answer after every step retry" in body
    assert f"ordersys runs reexecute {result.run_id}" in body


def test_a_day_range_run_names_its_days():
    run = dg.DagsterRun(job_name="analytics_refresh", tags={"ordersys/stage": "analytics",
                                                            "dagster/asset_partition_range_start": "2025-03-01",
                                                            "dagster/asset_partition_range_end": "2025-03-07"})
    _, body = alert_text(run, "the run failed", [])
    assert "Partition: 2025-03-01..2025-03-07" in body and f"ordersys runs reexecute {run.run_id}" in body
