"""Crafted rows for the analytics tests, written straight into the tables with SQL inserts
(the import, workflow, refund and notification stages are not needed to state known answers)."""

from __future__ import annotations

import itertools
from datetime import datetime

from sqlalchemy import Engine, insert

from ordersys_pipelines.db.schema import (
    customers,
    notifications,
    order_events,
    orders,
    refund_events,
    refunds,
)

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
