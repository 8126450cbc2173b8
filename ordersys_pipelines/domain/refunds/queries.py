"""Reading refunds: one refund as a value, an order's refunds, and a printable table of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Select, select

from ordersys_pipelines.db.schema import orders, refunds
from ordersys_pipelines.domain.money import plain

# pending → processing → processed | failed | skipped (processing → pending on a retried
# failure); rejected is final at request time.
IN_FLIGHT = ("pending", "processing")
COUNTED = ("pending", "processing", "processed")  # what a new request must fit beside
STATUSES = ("pending", "processing", "processed", "failed", "skipped", "rejected")


@dataclass(frozen=True)
class Refund:
    id: int
    order_id: int
    order_ref: str
    reference: str
    amount_cents: int
    type: str
    status: str
    reason: str | None  # what the requester gave
    last_error: str | None  # why it was rejected, skipped, failed or last retried
    attempts: int
    requested_at: datetime
    processed_at: datetime | None
    next_attempt_at: datetime


def _select() -> Select:
    return select(
        refunds.c.id,
        refunds.c.order_id,
        orders.c.order_ref,
        refunds.c.reference,
        refunds.c.amount_cents,
        refunds.c.type,
        refunds.c.status,
        refunds.c.reason,
        refunds.c.last_error,
        refunds.c.attempts,
        refunds.c.requested_at,
        refunds.c.processed_at,
        refunds.c.next_attempt_at,
    ).join(orders, orders.c.id == refunds.c.order_id)


def get_refund(conn: Connection, reference: str) -> Refund | None:
    row = conn.execute(_select().where(refunds.c.reference == reference)).one_or_none()
    return Refund(**row._mapping) if row else None


def order_refunds(conn: Connection, order_id: int) -> list[Refund]:
    rows = conn.execute(_select().where(refunds.c.order_id == order_id).order_by(refunds.c.id))
    return [Refund(**row._mapping) for row in rows]


def refunds_table(conn: Connection, order_id: int) -> str:
    """The order's refunds as a text table (for `ordersys orders show`), or 'no refunds'."""
    rows = [
        (
            r.reference,
            r.type,
            plain(r.amount_cents),
            r.status,
            r.attempts,
            f"{r.requested_at:%Y-%m-%d %H:%M:%S}",
            f"{r.processed_at:%Y-%m-%d %H:%M:%S}" if r.processed_at else "",
            r.last_error or r.reason or "",
        )
        for r in order_refunds(conn, order_id)
    ]
    if not rows:
        return "no refunds"
    headers = ("reference", "type", "amount", "status", "attempts", "requested (UTC)", "processed (UTC)", "reason")
    from tabulate import tabulate  # a report's renderer: the code location loads without it

    return tabulate(rows, headers=headers, disable_numparse=True)
