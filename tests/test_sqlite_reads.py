"""SQLite: queries go through `reading()` and never wait for the write lock, so a long write
(a large file's merge, a workflow batch) does not hold up a sensor's look or `ordersys status`;
writers still take the lock at BEGIN and queue for it."""

from __future__ import annotations

import sqlite3

import dagster as dg
import pytest
from sqlalchemy import func, insert, make_url, select
from workflow_helpers import add_one_unit_orders, add_products

from ordersys_pipelines.cli.status import build_report
from ordersys_pipelines.db.engine import get_engine, reading, utcnow
from ordersys_pipelines.db.schema import products
from ordersys_pipelines.jobs.refunds import refund_processing
from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.jobs.workflow import order_workflow
from ordersys_pipelines.resources import DatabaseResource, WorkflowSettingsResource
from ordersys_pipelines.sensors.refunds import build_refund_processing_sensor
from ordersys_pipelines.sensors.workflow import build_workflow_sensors
from ordersys_pipelines.settings import Settings


def _file(url: str) -> str:
    return make_url(url).database


def _write_lock_free(url: str) -> bool:
    """Whether another connection could take the write lock now (without waiting)."""
    probe = sqlite3.connect(_file(url), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as error:
        assert "locked" in str(error)
        return False
    finally:
        probe.close()


@pytest.fixture
def held_write_lock(sqlite_url):
    """A writer in the middle of its transaction: a product inserted, not committed."""
    engine = get_engine(sqlite_url)
    writer = engine.connect()
    writer.begin()
    now = utcnow()
    writer.execute(insert(products).values(sku="UNCOMMITTED", name="x", price_cents=1, stock=1, reserved=0,
                                           created_at=now, updated_at=now))
    assert not _write_lock_free(sqlite_url)
    yield engine
    writer.rollback()
    writer.close()


def test_a_reader_sees_the_last_commit_while_a_writer_holds_the_lock(sqlite_url, held_write_lock):
    with reading(held_write_lock) as conn:
        assert conn.execute(select(func.count()).select_from(products)).scalar_one() == 0
        conn.rollback()
    assert not _write_lock_free(sqlite_url)  # still the writer's


def test_a_reading_connection_leaves_the_write_lock_to_writers(sqlite_url):
    with reading(get_engine(sqlite_url)) as conn:
        conn.execute(select(func.count()).select_from(products)).scalar_one()
        assert conn.in_transaction()
        assert _write_lock_free(sqlite_url)


def test_a_writer_takes_the_lock_at_begin(sqlite_url):
    with get_engine(sqlite_url).begin():
        assert not _write_lock_free(sqlite_url)
    assert _write_lock_free(sqlite_url)


def test_sensors_and_status_look_while_a_long_write_runs(sqlite_url, monkeypatch):
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        add_one_unit_orders(conn, 3, "A")
    writer = engine.connect()
    writer.begin()
    add_products(writer, {"B": 5})
    try:
        assert not _write_lock_free(sqlite_url)
        settings = Settings()
        workflow_sensor, settlement_sensor, _ = build_workflow_sensors(settings, order_workflow, payment_settlement)
        resources = {"database": DatabaseResource(url=sqlite_url), "workflow": WorkflowSettingsResource()}
        instance = dg.DagsterInstance.ephemeral()
        looked = workflow_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert len(looked.run_requests) == 1
        assert isinstance(settlement_sensor(dg.build_sensor_context(instance=instance, resources=resources)),
                          dg.SkipReason)
        refunds_sensor = build_refund_processing_sensor(settings, refund_processing)
        assert isinstance(refunds_sensor(dg.build_sensor_context(
            instance=instance, resources={"database": resources["database"]})), dg.SkipReason)
        monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
        report = build_report(since_hours=1, limit=5)
        assert {s.stage: s.backlog for s in report.stages}["workflow"] == 3
    finally:
        writer.rollback()
        writer.close()
