"""What is waiting at every stage: the figures `ordersys status` prints."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import import_files, notifications, orders, payment_callbacks, refunds


@dataclass(frozen=True)
class Backlog:
    orders_by_status: dict[str, int]
    imports_by_status: dict[str, int]
    callbacks_pending: int
    callbacks_rejected: int
    refunds_by_status: dict[str, int]
    notifications_by_status: dict[str, int]
    notifications_due: int


def _count_by(conn: Connection, column) -> dict[str, int]:
    rows = conn.execute(select(column, func.count()).group_by(column).order_by(column))
    return {status: count for status, count in rows}


def read_backlog(conn: Connection) -> Backlog:
    now = utcnow()
    callbacks = _count_by(conn, payment_callbacks.c.status)
    due = conn.execute(
        select(func.count()).where(notifications.c.status == "pending", notifications.c.next_attempt_at <= now)
    ).scalar_one()
    return Backlog(
        orders_by_status=_count_by(conn, orders.c.status),
        imports_by_status=_count_by(conn, import_files.c.status),
        callbacks_pending=callbacks.get("pending", 0),
        callbacks_rejected=callbacks.get("rejected", 0),
        refunds_by_status=_count_by(conn, refunds.c.status),
        notifications_by_status=_count_by(conn, notifications.c.status),
        notifications_due=due,
    )
