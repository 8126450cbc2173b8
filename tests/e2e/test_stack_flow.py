"""The whole stack, hands-free: a file dropped into the inbox flows through import, workflow,
settlement and analytics by sensors alone, and the KPIs in Redis match the database."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import redis
from rejected_support import KILLED_NAME, failed_by_design
from sqlalchemy import func, select

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import import_files, orders
from ordersys_pipelines.domain.analytics.kpis import compute_range
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore
from ordersys_pipelines.domain.imports.catalog import load_catalog
from ordersys_pipelines.domain.imports.generate import generate_orders, write_catalog
from ordersys_pipelines.domain.orders import states
from ordersys_pipelines.run_launcher import WORKER_TAG
from ordersys_pipelines.sensors.backlog import IN_FLIGHT

pytestmark = pytest.mark.xdist_group("stack")

FIRST_DAY = date(2025, 3, 10)  # after ORDERSYS_KPI_START_DATE (2025-01-01, tests/e2e/conftest.py)
DAYS = 3
LINES = 300
TIMEOUT_S = 240
UNSETTLED = (states.CREATED, states.RESERVED, states.AWAITING_PAYMENT)


def _status_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all())


def _runs_summary(instance: dg.DagsterInstance) -> str:
    return "\n".join(
        f"{r.job_name} {r.status.value} {r.run_id[:8]} {dict(r.tags)}" for r in instance.get_runs(limit=50)
    )


def _failures(instance: dg.DagsterInstance) -> str:
    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event and event.is_failure:
                lines.append(f"{run.job_name} {run.run_id[:8]}: {record.message}")
    return "\n".join(lines)


def _kpis_match(engine, store: AnalyticsStore, days: list[date]) -> bool:
    with engine.connect() as conn:
        expected = compute_range(conn, days[0], days[-1], ZoneInfo("UTC"))
    stored = store.read_days(days)
    return all(stored[d] and {k: int(v) for k, v in stored[d].items()} == expected[d].as_hash() for d in days)


def test_file_in_inbox_reaches_kpis_through_sensors(stack, tmp_path):
    tz = ZoneInfo("UTC")
    engine = get_engine(stack.database_url)
    catalog_file = tmp_path / "catalog.csv"
    write_catalog(catalog_file, stock=1_000)
    loaded = load_catalog(engine, catalog_file)  # what `ordersys catalog load` does
    assert loaded.products_created == 2_000

    # Written next to the inbox and renamed in, as a shop's upload would land.
    generated = generate_orders(tmp_path / "orders.csv", rows=LINES, seed=5, start=FIRST_DAY, days=DAYS)
    started = time.monotonic()
    generated.path.rename(stack.inbox / "shop-2025-03.csv")
    days = [FIRST_DAY + timedelta(days=i) for i in range(DAYS)]

    store = AnalyticsStore(redis.Redis.from_url(stack.env["ORDERSYS_REDIS_URL"], decode_responses=True),
                           lambda name: stack.redis_prefix + name)
    instance = dg.DagsterInstance.from_config(str(stack.home))
    deadline = started + TIMEOUT_S
    first_kpi_s = None
    try:
        # 1. The first KPI hash of a day in the file appears through the sensor path alone.
        while first_kpi_s is None and time.monotonic() < deadline:
            if any(store.read_days(days).values()):
                first_kpi_s = time.monotonic() - started
            else:
                time.sleep(1)
        # 2. The chain runs to its end: every order settled, no run queued or in progress and the
        # analytics run after settlement done (analytics also follows order_workflow, so the
        # first hash may predate settlement; the run after settlement follows a sensor tick).
        while time.monotonic() < deadline:
            counts = _status_counts(engine)
            busy = instance.get_run_ids(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=1)
            if counts and not any(counts.get(s) for s in UNSETTLED) and not busy and _kpis_match(engine, store, days):
                break
            time.sleep(1)
        settled_s = time.monotonic() - started
    finally:
        report = (f"orders by status: {_status_counts(engine)}\nruns:\n{_runs_summary(instance)}\n"
                  f"failures:\n{_failures(instance)}\nlog:\n{stack.log()}")
    assert first_kpi_s is not None, f"no KPI hash appeared within {TIMEOUT_S}s\n{report}"
    print(f"first KPI hash after {first_kpi_s:.1f}s, all settled after {settled_s:.1f}s")

    counts = _status_counts(engine)
    assert sum(counts.values()) == generated.orders, report
    assert not any(counts.get(s) for s in UNSETTLED), report
    assert set(counts) <= {states.FINALIZED, states.FAILED}, report
    assert counts.get(states.FINALIZED, 0) > generated.orders * 0.8, report
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert not [run for run in failed if not failed_by_design(run)], report
    ran = {r.job_name for r in instance.get_runs()}
    # payment_settlement may have nothing left: the workflow run applies the callbacks already due.
    assert {"orders_import", "order_workflow", "analytics_refresh"} <= ran, report

    with engine.connect() as conn:
        expected = compute_range(conn, days[0], days[-1], tz)
    stored = store.read_days(days)
    for day in days:
        assert expected[day].order_count > 0, f"{day} has no finalized order"
        assert stored[day] is not None, f"no KPI hash for {day}\n{report}"
        assert {k: int(v) for k, v in stored[day].items()} == expected[day].as_hash(), f"{day}\n{report}"


def _wait_for(condition, what: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.05)
    return found


def test_a_killed_import_run_is_failed_by_monitoring_and_its_retry_imports_the_file(stack, tmp_path):
    """After the flow test (it counts every order of the database). The import run's process is
    killed with SIGKILL as soon as the run has started (at its first steps, 30,000 lines still to
    import): run monitoring sees the process gone and fails the run (not an hour later, at its
    maximum runtime), and the run retry imports the file whole, each order once."""
    engine = get_engine(stack.database_url)
    generated = generate_orders(tmp_path / "killed.csv", rows=30_000, seed=17, start=FIRST_DAY, days=DAYS)
    generated.path.rename(stack.inbox / KILLED_NAME)
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        def runs():
            return instance.get_runs(dg.RunsFilter(tags={"ordersys/file": KILLED_NAME}))

        def started_run():
            # Started: monitoring looks at a started run's process; one that dies while starting
            # fails at the start timeout.
            return next((r for r in runs() if WORKER_TAG in r.tags and r.status == dg.DagsterRunStatus.STARTED), None)

        victim = _wait_for(started_run, "no import run of the file started in a prewarmed process")
        os.kill(json.loads(victim.tags[WORKER_TAG])["pid"], signal.SIGKILL)

        failed = _wait_for(lambda: (r := instance.get_run_by_id(victim.run_id)).status == dg.DagsterRunStatus.FAILURE
                           and r, f"the killed run {victim.run_id} was not failed\n{stack.log()}", timeout=120)
        reasons = [record.message for record in instance.all_logs(failed.run_id) if record.message]
        assert any("was killed or crashed" in m for m in reasons), reasons
        retry = _wait_for(lambda: next((r for r in runs() if r.tags.get("dagster/parent_run_id") == victim.run_id
                                        and r.status == dg.DagsterRunStatus.SUCCESS), None),
                          f"no successful retry of {victim.run_id}\n{_runs_summary(instance)}\n{stack.log()}")
        assert retry.job_name == "orders_import"
    with engine.connect() as conn:
        status = conn.execute(select(import_files.c.status).where(import_files.c.original_name == KILLED_NAME)).scalar_one()
        imported = conn.execute(select(func.count()).select_from(orders).where(orders.c.order_ref.like("ORD-17-%"))).scalar_one()
    assert status == "completed"
    assert imported == generated.orders
