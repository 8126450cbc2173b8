"""Recent failures recorded in the database, each with its cause in one line.

Failed files are listed one by one (file and reason). Orders, refunds, notifications and
callbacks fail in numbers for the same few reasons (a declined payment, an unreachable mail
server), so they are grouped by cause: how many, the latest, and one example to look at.
A failed file that was imported again successfully is `completed`, so it drops out by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from ordersys_pipelines.db.schema import (
    import_files,
    notification_channel_state,
    notifications,
    orders,
    payment_callbacks,
    refunds,
)
from ordersys_pipelines.domain.orders.states import FAILED

ONE_LINE = 200
# The failure metadata entry a step sets when it refused its input (a rejected file, a refused
# refund): re-executing the run would fail the same way, the input must be fixed.
FAILURE_KIND, DATA_FAILURE = "failure_kind", "data"


@dataclass(frozen=True)
class Failure:
    kind: str  # import, order, refund, refund request, notification, callback, channel
    subject: str  # the file, or an example order ref / refund reference / notification id
    cause: str  # one line
    count: int
    latest_at: datetime | None  # naive UTC


def one_line(text: str | None, width: int = ONE_LINE) -> str:
    """The first non-empty line of a message, whitespace and control bytes collapsed, cut to `width`."""
    if not text:
        return "(no reason recorded)"
    lines = [line for line in str(text).splitlines() if line.strip()]
    flat = re.sub(r"[\s\x00-\x1f\x7f]+", " ", lines[0] if lines else "").strip() or "(no reason recorded)"
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _as_datetime(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def failed_files(conn: Connection, since: datetime, limit: int) -> list[Failure]:
    moment = func.coalesce(import_files.c.finished_at, import_files.c.started_at)
    rows = conn.execute(
        select(import_files.c.original_name, import_files.c.error, moment)
        .where(import_files.c.status == "failed", moment >= since)
        .order_by(moment.desc(), import_files.c.id.desc())
        .limit(limit)
    )
    return [Failure("import", name, one_line(error), 1, _as_datetime(at)) for name, error, at in rows]


def _grouped(conn: Connection, kind: str, reason, moment, example, where, since: datetime, limit: int) -> list[Failure]:
    latest = func.max(moment)
    rows = conn.execute(
        select(reason, func.count(), latest, func.min(example))
        .where(where, moment >= since)
        .group_by(reason)
        .order_by(latest.desc())
        .limit(limit)
    )
    return [Failure(kind, str(subject), one_line(cause), int(count), _as_datetime(at))
            for cause, count, at, subject in rows]


def recent_failures(conn: Connection, since: datetime, limit: int = 10) -> list[Failure]:
    """Failures since `since` (naive UTC), newest first: files one by one, the rest by cause
    (at most `limit` of each kind)."""
    found = failed_files(conn, since, limit)
    found += _grouped(conn, "order", orders.c.status_reason, orders.c.status_changed_at, orders.c.order_ref,
                      orders.c.status == FAILED, since, limit)
    # A refund that failed for good was last tried at its next_attempt_at.
    found += _grouped(conn, "refund", refunds.c.last_error, refunds.c.next_attempt_at, refunds.c.reference,
                      refunds.c.status == "failed", since, limit)
    found += _grouped(conn, "refund request", refunds.c.last_error, refunds.c.requested_at, refunds.c.reference,
                      refunds.c.status == "rejected", since, limit)
    found += _grouped(conn, "notification", notifications.c.last_error, notifications.c.next_attempt_at,
                      notifications.c.id, notifications.c.status == "failed", since, limit)
    found += _grouped(conn, "callback", payment_callbacks.c.reason, payment_callbacks.c.received_at,
                      payment_callbacks.c.event_id, payment_callbacks.c.status == "rejected", since, limit)
    found += open_channels(conn)
    return sorted(found, key=lambda f: f.latest_at or datetime.min, reverse=True)


def open_channels(conn: Connection) -> list[Failure]:
    """Notification channels whose circuit breaker is open (the receiver is down): their
    notifications wait, attempts unchanged, until it answers again."""
    state = notification_channel_state.c
    rows = conn.execute(select(state.channel, state.reason, state.failures, state.left_pending, state.opened_at)
                        .where(state.state == "open").order_by(state.channel)).all()
    return [Failure("channel", channel, f"down: {one_line(reason)}; {left_pending} notifications wait",
                    int(failures), _as_datetime(opened_at))
            for channel, reason, failures, left_pending, opened_at in rows]
