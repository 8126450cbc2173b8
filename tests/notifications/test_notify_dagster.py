"""The notification_dispatch job, its sensor, and the area's place in the Definitions."""

from __future__ import annotations

import json
import warnings

import dagster as dg
import pytest
from sqlalchemy import update

from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.jobs.notifications import notification_dispatch
from ordersys_pipelines.resources import DatabaseResource, NotifierResource
from ordersys_pipelines.sensors.notifications import build_notification_dispatch_sensor
from ordersys_pipelines.settings import Settings

notification_dispatch_sensor = build_notification_dispatch_sensor(Settings(), notification_dispatch)


@pytest.fixture
def resources(db_url, smtp_server):
    return {
        "database": DatabaseResource(url=db_url),
        "notifier": NotifierResource(channel="email", smtp_port=smtp_server.port, backoff_seconds=0,
                                     max_attempts=2, batch_size=3),
    }


def _step_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def test_the_job_sends_in_batches_and_reports_per_type_and_channel(shop, resources, smtp_server):
    smtp_server.recorder.refuse["nobody@example.com"] = "550 5.1.1 User unknown"
    good = shop.orders(5, email="ann@example.com")
    shop.enqueue("order_confirmed", good)
    shop.enqueue("order_shipped", good[:2])
    shop.enqueue("order_cancelled", shop.orders(1, prefix="X", email="nobody@example.com"))

    result = notification_dispatch.execute_in_process(resources=resources)

    assert result.success and result.dagster_run.tags["ordersys/stage"] == "notifications"
    metadata = _step_metadata(result)
    assert (metadata["sent"], metadata["failed"], metadata["retried"], metadata["claimed"]) == (7, 1, 0, 8)
    assert metadata["batches"] == 3 and metadata["seconds"] > 0
    table = metadata["by_type_and_channel"]
    assert "| order_confirmed | email | 5 | 0 | 0 |" in table
    assert "| order_shipped | email | 2 | 0 | 0 |" in table
    assert "| order_cancelled | email | 0 | 0 | 1 |" in table
    assert "550 5.1.1 User unknown" in metadata["errors"]
    assert len(smtp_server.messages) == 7
    # Run again: nothing is due, nothing is sent twice.
    again = notification_dispatch.execute_in_process(resources=resources)
    assert _step_metadata(again)["claimed"] == 0 and len(smtp_server.messages) == 7


def test_the_job_takes_batch_size_and_a_bound_from_run_config(shop, resources):
    shop.enqueue("order_delivered", shop.orders(5))
    result = notification_dispatch.execute_in_process(resources=resources, run_config={
        "ops": {"dispatch_notifications": {"config": {"batch_size": 2, "max_batches": 2}}}})
    assert _step_metadata(result)["sent"] == 4
    assert sorted(row.status for row in shop.notifications()) == ["pending"] + ["sent"] * 4


def _tick(instance, resources, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return notification_dispatch_sensor(context), context


def test_the_sensor_requests_a_run_for_due_work_once(shop, resources, engine):
    instance = dg.DagsterInstance.ephemeral()
    result, _ = _tick(instance, resources)
    assert isinstance(result, dg.SkipReason) and "no notifications due" in result.skip_message

    shop.enqueue("order_confirmed", shop.orders(7))
    result, _ = _tick(instance, resources)
    # 7 due in batches of 3: three parallel runs of one batch each (ORDERSYS_PARALLEL_RUNS is 4).
    request, *others = result.run_requests
    assert request.run_key.startswith("notifications:7-7-") and request.run_key.endswith(":0")
    assert [r.run_key for r in others] == [f"{request.run_key}:1", f"{request.run_key}:2"]
    assert all(r.run_config["ops"]["dispatch_notifications"]["config"] == {"batch_size": 3, "max_batches": 1}
               for r in result.run_requests)
    assert request.tags["ordersys/due"] == "7"
    cursor = result.cursor

    again, _ = _tick(instance, resources, cursor)  # same work: nothing new is requested
    assert isinstance(again, dg.SkipReason) and "already requested" in again.skip_message

    stale = json.loads(cursor)  # the run asked for died before claiming: asked again after a lease
    stale["requested_at"] -= 301
    retry, _ = _tick(instance, resources, json.dumps(stale))
    assert retry.run_requests[0].run_key.endswith(":1") and retry.run_requests[0].run_key != request.run_key

    shop.enqueue("order_shipped", shop.orders(1, prefix="N", email="new@example.com"))
    more, _ = _tick(instance, resources, cursor)  # new work: a new run key
    assert more.run_requests[0].run_key.startswith("notifications:8-8-")

    with engine.begin() as conn:  # waiting for a retry later is not due
        conn.execute(update(notifications).values(status="sent"))
    idle, _ = _tick(instance, resources, more.cursor)
    assert isinstance(idle, dg.SkipReason)


def test_the_sensor_shares_the_batches_among_at_most_the_configured_runs(shop, resources, monkeypatch):
    shop.enqueue("order_confirmed", shop.orders(7))
    monkeypatch.setenv("ORDERSYS_PARALLEL_RUNS", "2")
    result, _ = _tick(dg.DagsterInstance.ephemeral(), resources)
    assert [r.run_config["ops"]["dispatch_notifications"]["config"]["max_batches"] for r in result.run_requests] == [2, 2]
    monkeypatch.setenv("ORDERSYS_PARALLEL_RUNS", "1")
    result, _ = _tick(dg.DagsterInstance.ephemeral(), resources)
    [request] = result.run_requests
    assert request.run_config["ops"]["dispatch_notifications"]["config"] == {"batch_size": 3, "max_batches": 3}


def test_the_sensor_waits_while_a_dispatch_run_is_in_flight(shop, resources):
    instance = dg.DagsterInstance.ephemeral()
    shop.enqueue("order_confirmed", shop.orders(2))
    run = instance.create_run_for_job(job_def=notification_dispatch, run_config={})  # NOT_STARTED
    result, _ = _tick(instance, resources)
    assert isinstance(result, dg.SkipReason) and run.run_id in result.skip_message
    instance.report_run_failed(run)
    result, _ = _tick(instance, resources)
    assert len(result.run_requests) == 1


def test_the_definitions_carry_the_job_sensor_and_notifier_without_warnings(monkeypatch, tmp_path):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", f"sqlite:///{tmp_path / 'defs.db'}")
    monkeypatch.setenv("ORDERSYS_NOTIFY_CHANNEL", "email")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from ordersys_pipelines.definitions import build_defs

        defs = build_defs()
        repository = defs.get_repository_def()
    job = repository.get_job("notification_dispatch")
    assert job.tags["ordersys/stage"] == "notifications"
    sensor = repository.get_sensor_def("notification_dispatch_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.job_name == job.name
    assert defs.resources["notifier"].channel == "email"
