"""`ordersys notifications retry`: re-queueing failed notifications, with filters, a dry run,
their history, and no interference with a dispatch that holds rows."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from notify_support import Shop
from sqlalchemy import func, select, update

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notification_events, notifications
from ordersys_pipelines.domain.notifications.requeue import RequeueFilters, requeue

n = notifications.c
OLD = datetime(2026, 11, 1, 12, 0)


def _run(*args: str):
    return CliRunner().invoke(main, ["notifications", *args])


def _fail(engine, ids, *, attempts=5, error="gave up after 5 attempts: webhook unavailable", **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(notifications).where(n.id.in_(ids)).values(
            status="failed", attempts=attempts, last_error=error, **values))


def _events(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(notification_events).order_by(notification_events.c.id)).all()


@pytest.fixture
def failed(settings, shop, engine):
    """Notifications of R-1 and R-2, all failed after an outage, except one sent and one that a
    dispatch run holds (pending, leased); one failed notification is old."""
    customer = shop.customer()
    first, second = shop.order(customer, "R-1"), shop.order(customer, "R-2")
    shop.enqueue("order_confirmed", [first, second])
    shop.enqueue("order_shipped", [first, second])
    shop.enqueue("order_delivered", [first, second])
    rows = {(row.order_id, row.type): row.id for row in shop.notifications()}
    ids = {
        "confirmed-1": rows[(first, "order_confirmed")], "confirmed-2": rows[(second, "order_confirmed")],
        "shipped-1": rows[(first, "order_shipped")], "shipped-2": rows[(second, "order_shipped")],
        "delivered-1": rows[(first, "order_delivered")], "delivered-2": rows[(second, "order_delivered")],
    }
    _fail(engine, [ids["confirmed-1"], ids["confirmed-2"], ids["shipped-1"], ids["shipped-2"]])
    _fail(engine, [ids["confirmed-2"]], created_at=OLD)
    with engine.begin() as conn:
        conn.execute(update(notifications).where(n.id == ids["delivered-1"]).values(
            status="sent", attempts=1, sent_at=utcnow()))
        conn.execute(update(notifications).where(n.id == ids["delivered-2"]).values(
            status="pending", attempts=2, claimed_by="dispatch:live-run",
            claim_expires_at=utcnow() + timedelta(minutes=5)))
    return ids


def test_a_dry_run_lists_and_changes_nothing(failed, shop):
    before = shop.notifications()
    result = _run("retry", "--dry-run")
    assert result.exit_code == 0, result.output
    listed = [int(line.split()[0]) for line in result.output.splitlines() if line[:1].isdigit()]
    assert sorted(listed) == sorted(failed[k] for k in ("confirmed-1", "confirmed-2", "shipped-1", "shipped-2"))
    assert "would re-queue 4 notifications (dry run: nothing changed)" in result.output
    assert "gave up after 5 attempts: webhook unavailable" in result.output
    assert shop.notifications() == before and _events(shop.engine) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--type", "order_shipped"), ["shipped-1", "shipped-2"]),
        (("--order", "R-2"), ["confirmed-2", "shipped-2"]),
        (("--since", "2026-11-15"), ["confirmed-1", "shipped-1", "shipped-2"]),
        (("--type", "order_confirmed", "--order", "R-1"), ["confirmed-1"]),
        (("--since", "2026-11-01 11:59:59", "--order", "R-2", "--type", "order_confirmed"), ["confirmed-2"]),
    ],
)
def test_filters_choose_what_is_requeued(failed, shop, args, expected):
    result = _run("retry", *args)
    assert result.exit_code == 0, result.output
    chosen = sorted(failed[k] for k in expected)
    assert f"re-queued {len(chosen)} notifications: {', '.join(map(str, chosen))}" in result.output
    rows = {row.id: row for row in shop.notifications()}
    for key, nid in failed.items():
        if key in expected:
            assert (rows[nid].status, rows[nid].attempts, rows[nid].claimed_by) == ("pending", 0, None)
            assert rows[nid].next_attempt_at <= utcnow()
        elif key.startswith(("confirmed", "shipped")):
            assert (rows[nid].status, rows[nid].attempts) == ("failed", 5)


def test_requeued_notifications_are_sent_and_the_history_says_so(failed, shop):
    assert _run("retry").exit_code == 0
    again = _run("retry")
    assert "re-queued 0 notifications" in again.output  # idempotent

    events = _events(shop.engine)
    assert len(events) == 4 and {e.notification_id for e in events} == {
        failed[k] for k in ("confirmed-1", "confirmed-2", "shipped-1", "shipped-2")}
    event = events[0]
    assert (event.event, event.from_status, event.to_status, event.attempts_before) == ("requeued", "failed",
                                                                                       "pending", 5)
    assert event.reason == "re-queued after 5 attempts; last error: gave up after 5 attempts: webhook unavailable"
    assert event.actor.startswith("cli:")

    sent = _run("send")
    assert "sent 4, retried 0, failed 0" in sent.output, sent.output
    rows = {row.id: row for row in shop.notifications()}
    assert rows[failed["delivered-2"]].claimed_by == "dispatch:live-run"  # held by a run: untouched
    assert rows[failed["delivered-1"]].attempts == 1  # sent: never sent again
    assert {rows[failed[k]].status for k in ("confirmed-1", "confirmed-2", "shipped-1", "shipped-2")} == {"sent"}

    history = _run("history", str(failed["shipped-1"]))
    assert history.exit_code == 0, history.output
    assert "requeued" in history.output and "failed → pending" in history.output
    assert "re-queued after 5 attempts" in history.output


def test_pending_ones_waiting_on_a_backoff_can_be_made_due(failed, shop, engine):
    waiting = failed["delivered-2"]
    with engine.begin() as conn:  # the run is gone; the row waits an hour after four attempts
        conn.execute(update(notifications).where(n.id == waiting).values(
            claimed_by=None, claim_expires_at=None, attempts=4, next_attempt_at=utcnow() + timedelta(hours=1)))
    result = _run("retry", "--status", "pending")
    assert result.exit_code == 0 and f"re-queued 1 notifications: {waiting}" in result.output
    row = shop.notification(waiting)
    assert (row.status, row.attempts) == ("pending", 0) and row.next_attempt_at <= utcnow()
    assert "re-queued 0 notifications" in _run("retry", "--status", "pending").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--status", "sent"), "Invalid value for '--status'"),
        (("--type", "order_teleported"), "Error: unknown type 'order_teleported'"),
        (("--order", "NOPE"), "Error: no order 'NOPE'"),
        (("--since", "yesterday"), "Invalid value for '--since'"),
    ],
)
def test_bad_filters_are_refused(settings, args, message):
    result = _run("retry", *args)
    assert result.exit_code != 0 and message in result.output


def test_two_retries_at_once_requeue_each_notification_once(locking_url):
    shop = Shop(get_engine(locking_url))
    shop.enqueue("order_confirmed", shop.orders(300))
    _fail(shop.engine, [row.id for row in shop.notifications()])
    barrier = threading.Barrier(2)
    results = {}

    def run(name: str) -> None:
        barrier.wait()
        results[name] = requeue(shop.engine, RequeueFilters(), actor=name)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results["a"] + results["b"]) == [row.id for row in shop.notifications()]
    with shop.engine.connect() as conn:
        per_row = conn.execute(select(notification_events.c.notification_id, func.count())
                               .group_by(notification_events.c.notification_id)).all()
    assert len(per_row) == 300 and {count for _, count in per_row} == {1}
