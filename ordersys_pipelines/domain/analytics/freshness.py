"""Which days a finished run changed, read from the event tables by the run's id.

A run that moved orders changed the KPIs of those orders' days (they count on `order_date`);
a run that processed refunds changed the refunds' `processed_at` days and, through net revenue,
the leaderboard. Both lookups use the `run_id` indexes and return only the span.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from ordersys_pipelines.db.schema import order_events, orders, refund_events, refunds
from ordersys_pipelines.domain.analytics.days import local_day
from ordersys_pipelines.domain.analytics.kpis import readable_span


@dataclass(frozen=True)
class TouchedDays:
    """The local days a run's orders and refunds fall on, as a covering span."""

    first: date
    last: date
    orders: int
    refunds: int


def touched_days(conn: Connection, run_id: str, tz: ZoneInfo) -> TouchedDays | None:
    """The span of local days a run touched, or None when it changed nothing the KPIs count
    (no order events, and no refund of its events was processed)."""
    touched_orders = orders.c.id.in_(select(order_events.c.order_id).where(order_events.c.run_id == run_id))
    touched_refunds = refunds.c.id.in_(select(refund_events.c.refund_id).where(refund_events.c.run_id == run_id))
    order_count = conn.execute(select(func.count()).select_from(orders).where(touched_orders)).scalar_one()
    refund_count = conn.execute(select(func.count()).select_from(refunds).where(touched_refunds)).scalar_one()
    # A run may have failed an order whose date cannot be read: the span skips what it cannot read.
    spans = [span for span in (readable_span(conn, orders.c.order_date, touched_orders),
                               readable_span(conn, refunds.c.processed_at, touched_refunds)) if span]
    if not spans:  # no events, or only refunds that did not get processed: no KPI changed
        return None
    days = [local_day(stamp, tz) for span in spans for stamp in span]
    return TouchedDays(min(days), max(days), int(order_count), int(refund_count))
