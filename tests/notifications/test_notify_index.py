"""Dispatch's claim reads the partial index of the active states on PostgreSQL (migration 0010):
a sent notification leaves it, and the claim finds the due ones through it in its own order even
when the planner statistics still count every notification pending. SQLite and MariaDB keep the
full (status, next_attempt_at) index."""

from __future__ import annotations

from datetime import timedelta

from plan_support import explained
from sqlalchemy import insert, inspect, text

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.claims import lock_claimable
from ordersys_pipelines.domain.notifications.dispatch import due_clause

n = notifications.c
PARTIAL = {"ix_notifications_active", "ix_notifications_failed"}
FULL = {"ix_notifications_status"}


def _add(conn, count: int, status: str, *, due_in: timedelta = timedelta(minutes=-1), **values) -> None:
    at = utcnow() + due_in
    first = conn.execute(text("SELECT count(*) FROM notifications")).scalar()
    conn.execute(insert(notifications), [
        {"type": "order_confirmed", "dedup_key": f"index-test:{first + i}", "status": status,
         "next_attempt_at": at, **values} for i in range(count)])


def _claim(conn, limit: int) -> list[int]:
    return lock_claimable(conn, notifications, where=due_clause(utcnow()), order_by=[n.next_attempt_at, n.id],
                          limit=limit)


def test_the_active_index_where_the_database_has_partial_ones(engine):
    names = {index["name"] for index in inspect(engine).get_indexes("notifications")}
    if engine.dialect.name == "postgresql":
        assert PARTIAL <= names and not FULL & names
    else:
        assert FULL <= names and not PARTIAL & names


def test_the_claim_takes_due_pending_and_lapsed_sending_rows_only(engine):
    lapsed = utcnow() - timedelta(minutes=5)
    with engine.begin() as conn:
        _add(conn, 3, "pending")
        _add(conn, 2, "pending", due_in=timedelta(hours=1))  # a retry not yet due
        _add(conn, 2, "sending", claimed_by="dead-run", claim_expires_at=lapsed)
        _add(conn, 1, "sending", claimed_by="live-run", claim_expires_at=utcnow() + timedelta(minutes=5))
        _add(conn, 4, "sent", sent_at=utcnow())
        _add(conn, 2, "failed")
    with engine.begin() as conn:
        claimed = _claim(conn, 100)
        statuses = conn.execute(text("SELECT status, count(*) FROM notifications WHERE id IN ("
                                     + ",".join(map(str, claimed)) + ") GROUP BY status")).all()
    assert dict(statuses) == {"pending": 3, "sending": 2}


def test_the_claim_reads_the_active_index_with_statistics_from_before_the_sending(pg_url):
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        _add(conn, 20_000, "pending")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE notifications"))  # every notification pending, as after a big workflow
    with engine.begin() as conn:  # two row versions each, as dispatch leaves them
        conn.execute(text("UPDATE notifications SET status = 'sending' WHERE id % 100 <> 0"))
        conn.execute(text("UPDATE notifications SET status = 'sent', sent_at = now() WHERE status = 'sending'"))
    with explained(engine, "SELECT notifications.id") as plans, engine.begin() as conn:
        assert len(_claim(conn, 1_000)) == 200
    assert plans and "Index Scan using ix_notifications_active" in plans[0], plans
