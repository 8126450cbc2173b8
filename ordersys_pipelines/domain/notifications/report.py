"""The notification history for operators: filtered rows and a summary by status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, func, select

from ordersys_pipelines.db.schema import notifications, orders
from ordersys_pipelines.domain.notifications.config import STATUSES
from ordersys_pipelines.domain.notifications.outbox import NOTIFICATION_TYPES

n = notifications.c


class ReportError(ValueError):
    """A filter value the report does not know."""


@dataclass(frozen=True)
class ReportRow:
    id: int
    order_ref: str | None
    type: str
    status: str
    channel: str | None
    total_cents: int | None
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Summary:
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def __getitem__(self, status: str) -> int:
        return self.by_status.get(status, 0)

    @property
    def success_rate(self) -> float | None:
        """Sent out of those that are finished (sent or failed); None when none are."""
        finished = self["sent"] + self["failed"]
        return self["sent"] / finished if finished else None


def validate_filters(notification_type: str | None, status: str | None) -> None:
    if notification_type is not None and notification_type not in NOTIFICATION_TYPES:
        raise ReportError(f"unknown type {notification_type!r}; valid: {', '.join(NOTIFICATION_TYPES)}")
    if status is not None and status not in STATUSES:
        raise ReportError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")


def notification_filters(
    conn: Connection, *, notification_type: str | None = None, status: str | None = None,
    order_ref: str | None = None, since: datetime | None = None,
) -> list[ColumnElement[bool]]:
    """WHERE conditions on notifications for the operator's filters (`since`: created at or after)."""
    validate_filters(notification_type, status)
    filters = []
    if notification_type:
        filters.append(n.type == notification_type)
    if status:
        filters.append(n.status == status)
    if order_ref is not None:
        order_id = conn.execute(select(orders.c.id).where(orders.c.order_ref == order_ref)).scalar()
        if order_id is None:
            raise ReportError(f"no order {order_ref!r}")
        filters.append(n.order_id == order_id)
    if since is not None:
        filters.append(n.created_at >= since)
    return filters


def report_rows(conn: Connection, filters: list, *, limit: int | None = None) -> list[ReportRow]:
    """The notifications matching `filters`, newest first."""
    query = (
        select(n.id, orders.c.order_ref, n.type, n.status, n.channel, orders.c.total_cents, n.attempts,
               n.last_error, n.sent_at, n.created_at)
        .select_from(notifications.outerjoin(orders, orders.c.id == n.order_id))
        .where(*filters)
        .order_by(n.id.desc())
    )
    return [ReportRow(*row) for row in conn.execute(query if limit is None else query.limit(limit))]


def notification_report(
    conn: Connection, *, limit: int = 50, notification_type: str | None = None, status: str | None = None,
    order_ref: str | None = None,
) -> tuple[list[ReportRow], Summary]:
    """The newest `limit` notifications matching the filters, and the summary of all that match."""
    filters = notification_filters(conn, notification_type=notification_type, status=status, order_ref=order_ref)
    counts = conn.execute(select(n.status, func.count()).where(*filters).group_by(n.status))
    return report_rows(conn, filters, limit=limit), Summary(dict(counts.all()))


def unfinished_count(conn: Connection) -> int:
    """Notifications not yet sent or failed (waiting for their next attempt, or being sent)."""
    return conn.execute(select(func.count()).where(n.status.in_(("pending", "sending")))).scalar_one()
