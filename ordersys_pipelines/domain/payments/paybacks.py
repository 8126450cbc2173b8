"""Paying back payments the gateway approved after their order was cancelled or failed.

An approval can arrive after the order was cancelled (while its payment was in flight) or failed
(the payment expired): the gateway has captured money for an order that will never ship.
Settlement turns such a late approval into a payback, in the transaction that settles it: a full refund of
the payment with the reference `payback:<payment ref>` (one per payment, however often or by
however many runs the approval is delivered), its first `refund_events` row, and a
`payment_returned` notification. Refund processing then sends it to the gateway like any refund:
by reference (a repeated call never pays twice), retried with backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Connection, Text, exists, insert, literal, select, true

from ordersys_pipelines.db.dialect import insert_new, lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import rowset
from ordersys_pipelines.db.schema import orders, payment_callbacks, refund_events, refunds
from ordersys_pipelines.domain.notifications.outbox import enqueue_for_refunds

REFERENCE_PREFIX = "payback:"
REFUND_TYPE = "payback"
NOTIFICATION = "payment_returned"
_WHY = {"cancelled": "payment received after the order was cancelled",
        "failed": "payment received after the order had failed"}


@dataclass(frozen=True)
class LateApproval:
    order_id: int
    order_ref: str
    order_status: str  # cancelled | failed
    payment_ref: str
    amount_cents: int


def reference(payment_ref: str) -> str:
    return REFERENCE_PREFIX + payment_ref


def is_reserved(refund_reference: str) -> bool:
    """Payback references belong to settlement; a refund request must not take one."""
    return refund_reference.startswith(REFERENCE_PREFIX)


def start_paybacks(
    conn: Connection, late: Sequence[LateApproval], *, run_id: str | None, now: datetime
) -> list[int]:
    """A pending payback for every late approval whose payment has none yet (one statement;
    the unique reference makes a replayed approval, or a concurrent run, add nothing).
    Returns the ids of the paybacks added."""
    by_payment = {a.payment_ref: a for a in late}
    if not by_payment:
        return []
    wanted = rowset(
        conn,
        ((a.order_id, reference(a.payment_ref), a.amount_cents, _WHY.get(a.order_status, "payment received late"))
         for a in by_payment.values()),
        [("order_id", BigInteger()), ("reference", Text()), ("amount_cents", BigInteger()), ("reason", Text())],
        "paybacks",
    )
    source = select(
        wanted.c.order_id, wanted.c.reference, wanted.c.amount_cents, literal(REFUND_TYPE), literal("pending"),
        wanted.c.reason, literal(now), literal(now),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT … SELECT
    statement = insert_new(conn, refunds, ["reference"]).from_select(
        ["order_id", "reference", "amount_cents", "type", "status", "reason", "requested_at", "next_attempt_at"],
        source,
    )
    added = conn.execute(statement.returning(refunds.c.id, refunds.c.reason)).all()
    if not added:
        return []
    conn.execute(insert(refund_events), [
        {"refund_id": row.id, "from_status": None, "to_status": "pending", "reason": row.reason, "run_id": run_id,
         "created_at": now}
        for row in added
    ])
    ids = sorted(row.id for row in added)
    enqueue_for_refunds(conn, NOTIFICATION, ids)
    return ids


def pay_back_unreturned(conn: Connection, *, run_id: str | None = None) -> list[int]:
    """Start the paybacks settlement did not: approvals of cancelled or failed orders, for the
    order total, with no payback (settled before late approvals were paid back, and recorded by
    the migration that keeps events). The orders are locked as settlement locks them, and the
    unique reference adds nothing twice. Returns the ids of the paybacks added."""
    has_payback = exists().where(refunds.c.order_id == orders.c.id, refunds.c.type == REFUND_TYPE)
    approved = exists().where(
        payment_callbacks.c.payment_ref == orders.c.payment_ref,
        payment_callbacks.c.event_status == "approved",
        payment_callbacks.c.amount_cents == orders.c.total_cents,
    )
    query = (
        select(orders.c.id, orders.c.order_ref, orders.c.status, orders.c.payment_ref, orders.c.total_cents)
        .where(orders.c.status.in_(tuple(_WHY)), orders.c.payment_ref.is_not(None), approved, ~has_payback)
        .order_by(orders.c.id)
    )
    late = [LateApproval(row.id, row.order_ref, row.status, row.payment_ref, row.total_cents)
            for row in conn.execute(lock_rows(conn, query))]
    return start_paybacks(conn, late, run_id=run_id, now=utcnow())
