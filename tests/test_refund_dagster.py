"""The refund jobs through execute_in_process and the sensor through build_sensor_context."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import dagster as dg
import pytest
from refunds_support import gateway_refund_calls, make_order, refund_rows
from sqlalchemy import select, update

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import refund_events, refunds
from ordersys_pipelines.domain.refunds.requests import request_refund
from ordersys_pipelines.jobs.refunds import refund_processing, refund_request
from ordersys_pipelines.resources import DatabaseResource, build_resources
from ordersys_pipelines.sensors.refunds import build_refund_processing_sensor
from ordersys_pipelines.settings import Settings


@pytest.fixture
def run_resources(settings):
    return build_resources(dataclasses.replace(settings, gateway_refund_failure_rate=0.0))


def _request(engine, reference, amount_cents, order_ref="O-1"):
    with engine.connect() as conn:
        return request_refund(conn, order_ref, amount_cents, reference=reference).refund


def _metadata(result, node):
    (event,) = [e for e in result.events_for_node(node) if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_refund_processing_job_processes_a_batch_and_reports(settings, run_resources):
    engine = get_engine(settings.database_url)
    make_order(engine, "O-1", total_cents=5_000)
    make_order(engine, "O-2", total_cents=5_000)
    _request(engine, "R-1", 1_250)
    _request(engine, "R-2", 5_000, order_ref="O-2")
    result = refund_processing.execute_in_process(resources=run_resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert result.dagster_run.tags["ordersys/stage"] == "refunds"
    meta = _metadata(result, "process_refund_batch")
    assert {k: meta[k] for k in ("claimed", "processed", "failed", "skipped", "retried")} == {
        "claimed": 2, "processed": 2, "failed": 0, "skipped": 0, "retried": 0}
    assert (meta["amount_refunded_cents"], meta["amount_refunded"]) == (6_250, "62.50")
    assert meta["seconds"] >= 0
    assert all(r.status == "processed" and r.processed_at for r in refund_rows(engine))
    with engine.connect() as conn:  # analytics finds the run's refunds by run id
        touched = conn.execute(
            select(refunds.c.reference).join(refund_events, refund_events.c.refund_id == refunds.c.id)
            .where(refund_events.c.run_id == result.run_id, refund_events.c.to_status == "processed")
            .order_by(refunds.c.reference)
        ).scalars().all()
    assert touched == ["R-1", "R-2"]


def test_batch_size_from_run_config(settings, run_resources):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=5_000)
    for i in range(3):
        _request(engine, f"R-{i}", 100)
    result = refund_processing.execute_in_process(
        run_config={"ops": {"process_refund_batch": {"config": {"batch_size": 2}}}}, resources=run_resources)
    assert _metadata(result, "process_refund_batch")["processed"] == 2
    assert len(gateway_refund_calls(engine)) == 2


def _request_config(**config):
    return {"ops": {"request_refund_op": {"config": config}}}


def test_refund_request_job_records_a_refund_and_is_idempotent(settings, run_resources):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=5_000)
    config = _request_config(order_ref="O-1", amount="12.50", reference="ops-1", reason="broken")
    first = refund_request.execute_in_process(run_config=config, resources=run_resources)
    again = refund_request.execute_in_process(run_config=config, resources=run_resources)
    assert first.success and again.success
    assert _metadata(first, "request_refund_op")["created"] is True
    assert _metadata(again, "request_refund_op")["created"] is False
    (row,) = refund_rows(engine)
    assert (row.reference, row.amount_cents, row.status, row.reason) == ("ops-1", 1_250, "pending", "broken")
    with engine.connect() as conn:
        assert conn.execute(select(refund_events.c.run_id)).scalar_one() == first.run_id
    full = refund_request.execute_in_process(
        run_config=_request_config(order_ref="O-1", full=True, reference="ops-2"), resources=run_resources)
    assert _metadata(full, "request_refund_op")["amount_cents"] == 3_750


@pytest.mark.parametrize(
    ("config", "message", "recorded"),
    [
        ({"amount": "50.01"}, "refund refused: amount 50.01 exceeds the 50.00 left", True),
        ({"amount": "12.505"}, "has more than 2 decimals", False),
        ({"amount": "1", "full": True}, "either amount", False),
        ({}, "either amount", False),
    ],
)
def test_refund_request_job_fails_with_the_reason(settings, run_resources, config, message, recorded):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=5_000)
    result = refund_request.execute_in_process(
        run_config=_request_config(order_ref="O-1", reference="ops-1", **config), resources=run_resources,
        raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in failure.event_specific_data.error.message
    assert [r.status for r in refund_rows(engine)] == (["rejected"] if recorded else [])


def _tick(db_url, cursor=None, instance=None):
    context = dg.build_sensor_context(instance=instance or dg.DagsterInstance.ephemeral(), cursor=cursor,
                                      resources={"database": DatabaseResource(url=db_url)})
    return build_refund_processing_sensor(Settings.from_env(), refund_processing)(context), context


def test_sensor_launches_once_per_state_of_due_work(settings, db_url, run_resources):
    engine = get_engine(db_url)
    make_order(engine, total_cents=5_000)
    result, _ = _tick(db_url)
    assert isinstance(result, dg.SkipReason) and "no refunds due" in result.skip_message

    _request(engine, "R-1", 100)
    result, _ = _tick(db_url)
    (run,) = result.run_requests
    assert run.tags["ordersys/stage"] == "refunds" and run.tags["ordersys/due"] == "1"
    # A repeated tick with the cursor launches nothing; one without it repeats the run key.
    repeat, _ = _tick(db_url, cursor=result.cursor)
    assert isinstance(repeat, dg.SkipReason) and "already have a run" in repeat.skip_message
    lost_cursor, _ = _tick(db_url)
    assert lost_cursor.run_requests[0].run_key == run.run_key

    # New work is a new run key.
    _request(engine, "R-2", 100)
    second, _ = _tick(db_url, cursor=result.cursor)
    assert second.run_requests[0].run_key != run.run_key
    assert second.run_requests[0].tags["ordersys/due"] == "2"

    refund_processing.execute_in_process(resources=run_resources)
    done, _ = _tick(db_url, cursor=second.cursor)
    assert isinstance(done, dg.SkipReason)


def test_sensor_splits_a_large_backlog_into_parallel_batch_runs(db_url, monkeypatch):
    engine = get_engine(db_url)
    make_order(engine, total_cents=5_000)
    for n in range(5):
        _request(engine, f"R-{n}", 100)
    monkeypatch.setenv("ORDERSYS_BATCH_SIZE", "2")
    monkeypatch.setenv("ORDERSYS_PARALLEL_RUNS", "2")  # 3 batches due, 2 runs now, the rest next tick
    result, _ = _tick(db_url)
    first, second = result.run_requests
    assert second.run_key == f"{first.run_key}:1"
    assert {r.run_config["ops"]["process_refund_batch"]["config"]["batch_size"] for r in result.run_requests} == {2}
    assert first.tags["ordersys/due"] == "5"


def test_sensor_relaunches_for_claims_of_a_stopped_run_once_they_lapse(db_url):
    engine = get_engine(db_url)
    make_order(engine)
    _request(engine, "R-1", 100)
    first, _ = _tick(db_url)
    with engine.begin() as conn:  # a run claimed it, marked it processing, and died
        conn.execute(update(refunds).values(status="processing", claimed_by="dead-run",
                                            claim_expires_at=utcnow() + timedelta(seconds=60)))
    waiting, _ = _tick(db_url, cursor=first.cursor)
    assert isinstance(waiting, dg.SkipReason) and "1 waiting" in waiting.skip_message
    with engine.begin() as conn:
        conn.execute(update(refunds).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
        conn.execute(refund_events.insert().values(refund_id=1, from_status="pending", to_status="processing",
                                                   run_id="dead-run", created_at=utcnow()))
    again, _ = _tick(db_url, cursor=first.cursor)
    assert again.run_requests[0].run_key != first.run_requests[0].run_key
    assert json.loads(again.cursor)["watermark"] > json.loads(first.cursor)["watermark"]


def test_definitions_expose_the_refund_jobs_and_a_running_sensor():
    from ordersys_pipelines.definitions import build_defs

    defs = build_defs()
    assert defs.resolve_job_def("refund_processing").tags["ordersys/stage"] == "refunds"
    assert defs.resolve_job_def("refund_request").tags["ordersys/stage"] == "refunds"
    sensor = defs.resolve_sensor_def("refund_processing_sensor")
    assert sensor.job_name == "refund_processing"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
