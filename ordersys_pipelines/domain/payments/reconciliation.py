"""Reconciliation: the money the gateway approved is either an order's payment or paid back.

An approved payment is a payment reference with a verified approval (a callback settlement has
read; see `payment_callbacks.event_status`), for each amount approved. It is in order when its
order exists, the amount is the order total, and the order is paid (finalized, shipped,
delivered) or still being settled (awaiting payment), or, for an order that is cancelled or
failed, a payback of that amount has been processed. Every other approval is a discrepancy,
listed with its order, payment, amount and state; a payback still pending is one too, until the
gateway has returned the money.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, func, literal, or_, select

from ordersys_pipelines.db.schema import orders, payment_callbacks, refunds
from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.orders.states import (
    AWAITING_PAYMENT,
    CANCELLED,
    DELIVERED,
    FAILED,
    FINALIZED,
    SHIPPED,
)
from ordersys_pipelines.domain.payments import paybacks

PAID_OR_SETTLING = (FINALIZED, SHIPPED, DELIVERED, AWAITING_PAYMENT)
DIED = (CANCELLED, FAILED)
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class Discrepancy:
    payment_ref: str | None
    amount_cents: int | None  # as approved (None: too large to keep)
    order_ref: str | None
    order_status: str | None
    order_total_cents: int | None
    payback_reference: str | None
    payback_status: str | None
    payback_amount_cents: int | None

    @property
    def problem(self) -> str:
        if self.order_ref is None:
            return "no order has this payment reference"
        if self.amount_cents is None:
            return "approved amount out of range"
        if self.amount_cents != self.order_total_cents:
            return f"approved {plain(self.amount_cents)}, the order totals {plain(self.order_total_cents)}"
        if self.order_status not in DIED:
            return f"order is {self.order_status}"
        if self.payback_status is None:
            return f"order is {self.order_status} and the payment was not paid back"
        if self.payback_status != "processed":
            return f"order is {self.order_status}; its payback is {self.payback_status}"
        return (f"payback of {plain(self.payback_amount_cents)} does not return the approved "
                f"{plain(self.amount_cents)}")


@dataclass(frozen=True)
class Reconciliation:
    approved_payments: int  # approvals checked (payment reference and amount)
    discrepancy_count: int
    discrepancies: list[Discrepancy]  # the first `limit`, by payment reference

    @property
    def clean(self) -> bool:
        return self.discrepancy_count == 0

    def table(self, tablefmt: str = "simple") -> str:
        rows = [
            (d.order_ref or "", d.payment_ref or "", "" if d.amount_cents is None else plain(d.amount_cents),
             d.order_status or "", d.payback_reference or "", d.payback_status or "", d.problem)
            for d in self.discrepancies
        ]
        headers = ("order", "payment", "approved", "order state", "payback", "payback state", "problem")
        from tabulate import tabulate  # a report's renderer: the code location loads without it

        return tabulate(rows, headers=headers, disable_numparse=True, tablefmt=tablefmt)


def _approvals():
    callbacks = payment_callbacks.c
    return (
        select(callbacks.payment_ref, callbacks.amount_cents)
        .where(callbacks.event_status == "approved")
        .group_by(callbacks.payment_ref, callbacks.amount_cents)
        .subquery("approvals")
    )


def reconcile(conn: Connection, *, limit: int = DEFAULT_LIMIT) -> Reconciliation:
    """Check every approved payment (two queries, whatever the number of payments)."""
    approvals = _approvals()
    payback = refunds.alias("payback")
    in_order = case(
        (
            and_(
                orders.c.id.is_not(None),
                approvals.c.amount_cents == orders.c.total_cents,
                or_(
                    orders.c.status.in_(PAID_OR_SETTLING),
                    and_(orders.c.status.in_(DIED), payback.c.status == "processed",
                         payback.c.amount_cents == approvals.c.amount_cents),
                ),
            ),
            literal(1),
        ),
        else_=literal(0),  # NULLs (no order, no payback) land here too
    )
    joined = (
        approvals.outerjoin(orders, orders.c.payment_ref == approvals.c.payment_ref)
        .outerjoin(payback, and_(payback.c.order_id == orders.c.id, payback.c.type == paybacks.REFUND_TYPE))
    )
    # One row per approval: a payment reference has one order and that order one payback.
    checked, count = conn.execute(
        select(func.count(), func.coalesce(func.sum(1 - in_order), 0)).select_from(joined)
    ).one()
    rows = conn.execute(
        select(approvals.c.payment_ref, approvals.c.amount_cents, orders.c.order_ref,
               orders.c.status.label("order_status"), orders.c.total_cents.label("order_total_cents"),
               payback.c.reference.label("payback_reference"), payback.c.status.label("payback_status"),
               payback.c.amount_cents.label("payback_amount_cents"))
        .select_from(joined)
        .where(in_order == 0)
        .order_by(approvals.c.payment_ref, approvals.c.amount_cents)
        .limit(limit)
    ).all()
    return Reconciliation(int(checked), int(count), [Discrepancy(**row._mapping) for row in rows])
