"""Crafted rows for the analytics tests, written straight into the tables with SQL inserts
(the import, workflow, refund and notification stages are not needed to state known answers)."""

from __future__ import annotations

import itertools
from datetime import date, datetime

from sqlalchemy import Engine, insert

from ordersys_pipelines.db.schema import (
    customers,
    notifications,
    order_events,
    orders,
    refund_events,
    refunds,
)
from ordersys_pipelines.domain.analytics.kpis import DayKpis

_serial = itertools.count(1)


class Shop:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _insert(self, table, **values) -> int:
        with self.engine.begin() as conn:
            return conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()

    def customer(self, name: str, email: str | None = None) -> int:
        n = next(_serial)
        return self._insert(customers, name=name, email=email or f"c{n}@example.com")

    def order(self, customer_id: int, order_date: datetime, total_cents: int, status: str = "finalized") -> int:
        return self._insert(
            orders,
            order_ref=f"O-{next(_serial)}",
            customer_id=customer_id,
            order_date=order_date,
            total_cents=total_cents,
            status=status,
        )

    def refund(
        self, order_id: int, amount_cents: int, processed_at: datetime | None, status: str = "processed"
    ) -> int:
        return self._insert(
            refunds,
            order_id=order_id,
            reference=f"R-{next(_serial)}",
            amount_cents=amount_cents,
            type="partial",
            status=status,
            processed_at=processed_at,
        )

    def notification(
        self, status: str, *, sent_at: datetime | None = None, next_attempt_at: datetime | None = None
    ) -> int:
        values = {"type": "order_confirmed", "status": status, "dedup_key": f"n:{next(_serial)}", "sent_at": sent_at}
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        return self._insert(notifications, **values)

    def order_event(self, order_id: int, run_id: str, to_status: str = "finalized") -> None:
        self._insert(order_events, order_id=order_id, to_status=to_status, run_id=run_id)

    def refund_event(self, refund_id: int, run_id: str, to_status: str = "processed") -> None:
        self._insert(refund_events, refund_id=refund_id, to_status=to_status, run_id=run_id)


_ts = datetime.fromisoformat  # naive UTC, the form the tables store


def crafted_march(engine: Engine) -> Shop:
    """Orders around 2024-03-10 in Berlin (UTC+1): one exactly at local midnight, one a
    microsecond before the next midnight, refunds processed two days later, 03-11 empty."""
    shop = Shop(engine)
    alice, bob = shop.customer("Alice"), shop.customer("Bob")
    a1 = shop.order(alice, _ts("2024-03-09 23:00:00"), 10_000)  # 03-10 00:00:00 Berlin
    a2 = shop.order(alice, _ts("2024-03-10 22:59:59.999999"), 2_599, "shipped")  # 03-10 23:59:59.999999
    a3 = shop.order(bob, _ts("2024-03-09 22:59:59"), 5_000, "delivered")  # 03-09 23:59:59 Berlin
    shop.order(bob, _ts("2024-03-10 12:00:00"), 700, "failed")
    shop.order(bob, _ts("2024-03-10 13:00:00"), 800, "cancelled")
    shop.order(bob, _ts("2024-03-10 14:00:00"), 900, "created")  # not counted anywhere
    shop.order(bob, _ts("2024-03-10 15:00:00"), 2)  # AOV 12601 // 3 rounds down
    shop.refund(a1, 3_000, _ts("2024-03-12 10:00:00"))  # counted on 03-12, not on the order's day
    shop.refund(a3, 1_000, _ts("2024-03-11 23:30:00"))  # 03-12 00:30 Berlin
    shop.refund(a2, 99, None, status="pending")
    shop.refund(a3, 500, None, status="failed")
    for sent in ("2024-03-10 09:00:00", "2024-03-10 10:00:00", "2024-03-09 23:30:00"):
        shop.notification("sent", sent_at=_ts(sent))
    shop.notification("failed", next_attempt_at=_ts("2024-03-10 10:00:00"))
    shop.notification("pending", next_attempt_at=_ts("2024-03-10 10:00:00"))
    shop.notification("sending", next_attempt_at=_ts("2024-03-10 11:00:00"))
    return shop


# What `crafted_march` gives in Europe/Berlin, day by day (every other day is all zeros).
MARCH_BERLIN = {
    date(2024, 3, 9): DayKpis(order_count=1, gross_revenue_cents=5_000),
    date(2024, 3, 10): DayKpis(
        order_count=3,
        gross_revenue_cents=12_601,
        failed_order_count=1,
        cancelled_order_count=1,
        notifications_sent=3,
        notifications_failed=1,
    ),
    date(2024, 3, 11): DayKpis(),
    date(2024, 3, 12): DayKpis(refund_count=2, refund_amount_cents=4_000),
}
