"""Which days a finished run changed, read from the event tables by the run's id.

A run that moved orders changed the KPIs of those orders' days (they count on `order_date`);
a run that processed refunds changed the refunds' `processed_at` days and, through net revenue,
the leaderboard. Both lookups use the `run_id` indexes and return only the span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from ordersys_pipelines.db.schema import order_events, orders, refund_events, refunds
from ordersys_pipelines.domain.analytics.days import local_day


@dataclass(frozen=True)
class TouchedDays:
    """The local days a run's orders and refunds fall on, as a covering span."""

    first: date
    last: date
    orders: int
    refunds: int


def _as_datetime(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def touched_days(conn: Connection, run_id: str, tz: ZoneInfo) -> TouchedDays | None:
    """The span of local days a run touched, or None when it changed nothing the KPIs count
    (no order events, and no refund of its events was processed)."""
    touched_orders = select(order_events.c.order_id).where(order_events.c.run_id == run_id).distinct().subquery()
    order_count, order_low, order_high = conn.execute(
        select(func.count(), func.min(orders.c.order_date), func.max(orders.c.order_date)).join(
            touched_orders, touched_orders.c.order_id == orders.c.id
        )
    ).one()
    touched_refunds = (
        select(refund_events.c.refund_id).where(refund_events.c.run_id == run_id).distinct().subquery()
    )
    refund_count, refund_low, refund_high = conn.execute(
        select(func.count(), func.min(refunds.c.processed_at), func.max(refunds.c.processed_at)).join(
            touched_refunds, touched_refunds.c.refund_id == refunds.c.id
        )
    ).one()
    stamps = [_as_datetime(v) for v in (order_low, order_high, refund_low, refund_high) if v is not None]
    if not stamps:  # no events, or only refunds that did not get processed: no KPI changed
        return None
    days = [local_day(stamp, tz) for stamp in stamps]
    return TouchedDays(min(days), max(days), int(order_count), int(refund_count))
