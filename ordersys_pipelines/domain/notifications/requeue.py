"""Putting failed notifications back in the queue (`ordersys notifications retry`).

A re-queued notification is `pending`, due now, with its attempts back at 0 (its last error is
kept), and its history (`notification_events`) says who re-queued it, from which status and
after how many attempts. A notification some dispatch run holds (a live lease) is left alone,
and so is one already waiting to go: re-queueing the same selection twice changes nothing.
Rows are read without locks, then locked by id with SKIP LOCKED and the condition checked again
(as db.dialect.update_returning does), so a concurrent dispatch or retry never sees a half
re-queued row and never has a row re-queued under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, and_, insert, or_, select, update

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import notification_events, notifications
from ordersys_pipelines.domain.claims import claimable
from ordersys_pipelines.domain.notifications.report import (
    ReportError,
    ReportRow,
    notification_filters,
    report_rows,
)

REQUEUE_STATUSES = ("failed", "pending")
CHUNK = 500
MAX_REASON_CHARS = 2000
n = notifications.c


@dataclass(frozen=True)
class RequeueFilters:
    notification_type: str | None = None
    status: str = "failed"
    order_ref: str | None = None
    since: datetime | None = None  # created at or after (naive UTC)


def _conditions(conn: Connection, filters: RequeueFilters, now: datetime) -> list[ColumnElement[bool]]:
    if filters.status not in REQUEUE_STATUSES:
        raise ReportError(f"only {' or '.join(REQUEUE_STATUSES)} notifications can be re-queued, "
                          f"not {filters.status!r} (a sent one is never sent again; a sending one is held by a run)")
    conditions = notification_filters(conn, notification_type=filters.notification_type, status=filters.status,
                                      order_ref=filters.order_ref, since=filters.since)
    conditions.append(claimable(notifications))
    if filters.status == "pending":  # only those the re-queue would change: waiting on attempts or a backoff
        conditions.append(or_(n.attempts > 0, n.next_attempt_at > now))
    return conditions


def requeue_candidates(conn: Connection, filters: RequeueFilters) -> list[ReportRow]:
    """What `requeue` would put back now (newest first); changes nothing."""
    return report_rows(conn, _conditions(conn, filters, utcnow()))


def requeue(engine: Engine, filters: RequeueFilters, *, actor: str) -> list[int]:
    """Re-queue the notifications matching `filters`; returns their ids (ascending)."""
    done: list[int] = []
    with engine.begin() as conn:
        now = utcnow()
        conditions = _conditions(conn, filters, now)
        seen = sorted(conn.execute(select(n.id).where(*conditions)).scalars())
        for start in range(0, len(seen), CHUNK):
            chunk = seen[start:start + CHUNK]
            locked = conn.execute(lock_rows(
                conn, select(n.id, n.status, n.attempts, n.last_error).where(n.id.in_(chunk), *conditions),
                skip_locked=True,
            )).all()
            if not locked:
                continue
            ids = [row.id for row in locked]
            conn.execute(
                update(notifications).where(and_(n.id.in_(ids), *conditions))
                .values(status="pending", attempts=0, next_attempt_at=now, claimed_by=None, claim_expires_at=None)
            )
            conn.execute(insert(notification_events), [
                {"notification_id": row.id, "event": "requeued", "from_status": row.status, "to_status": "pending",
                 "attempts_before": row.attempts, "actor": actor[:64], "created_at": now,
                 "reason": (f"re-queued after {row.attempts} attempts"
                            + (f"; last error: {row.last_error}" if row.last_error else ""))[:MAX_REASON_CHARS]}
                for row in locked
            ])
            done += ids
    return sorted(done)


def notification_history(conn: Connection, notification_id: int) -> list:
    """The events of one notification, oldest first."""
    e = notification_events.c
    return conn.execute(
        select(notification_events).where(e.notification_id == notification_id).order_by(e.id)
    ).all()
