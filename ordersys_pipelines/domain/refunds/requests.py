"""Refund requests: validated and recorded in one transaction with the order row locked.

The reference is an idempotency key. The same reference with the same order and amount is the
same request: the stored refund comes back unchanged (a refused one is refused again). The same
reference with other parameters is an error naming both requests.

Rules, decided under the order lock so concurrent requests cannot break them together:
the order is finalized, shipped or delivered and has a payment; the amount is a positive number
of cents; refunds processed + in flight (pending, processing) + this one ≤ the order total.
`full=True` asks for everything still left. The type is `full` when the refund brings the
order's refunded total to the order total, `partial` otherwise.

A refused request is stored as `rejected` with the reason in `last_error` (the requester's own
reason stays in `reason`) and raised as RefundRefused. Two refusals cannot be stored, because
the row would have nothing valid to hold: an unknown order and a negative amount.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, insert, select

from ordersys_pipelines.db.dialect import insert_new
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import orders, refund_events, refunds
from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.payments import paybacks
from ordersys_pipelines.domain.refunds.queries import COUNTED, IN_FLIGHT, Refund, get_refund

REFUNDABLE_STATUSES = ("finalized", "shipped", "delivered")
MAX_REFERENCE_LENGTH = 100


class RefundError(Exception):
    """A refund request that cannot be carried out as asked."""


class RefundRefused(RefundError):
    """The request breaks a rule; `result` holds the stored rejected refund (None when the
    request could not be stored: unknown order, negative amount)."""

    def __init__(self, reason: str, result: RefundRequestResult | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


class RefundReferenceConflict(RefundError):
    """The reference already names a request with other parameters."""


@dataclass(frozen=True)
class RefundRequestResult:
    refund: Refund
    created: bool  # False: an earlier request with this reference came back unchanged


def request_refund(
    conn: Connection,
    order_ref: str,
    amount_cents: int | None = None,
    *,
    full: bool = False,
    reference: str,
    reason: str | None = None,
    run_id: str | None = None,
) -> RefundRequestResult:
    """Record a refund request (status `pending`), or return the one with this reference.

    Commits its own transaction, so a refused request stays recorded: pass a connection that
    is not inside a transaction. Raises RefundRefused, RefundReferenceConflict, or ValueError /
    TypeError for arguments that are not a request at all.
    """
    if full == (amount_cents is not None):
        raise ValueError("give either an amount in cents or full=True")
    if amount_cents is not None and (isinstance(amount_cents, bool) or not isinstance(amount_cents, int)):
        raise TypeError(f"amount_cents must be an integer number of cents, not {amount_cents!r}")
    if not reference or len(reference) > MAX_REFERENCE_LENGTH:
        raise ValueError(f"reference must be 1 to {MAX_REFERENCE_LENGTH} characters")
    if paybacks.is_reserved(reference):
        raise ValueError(
            f"reference {reference!r}: references starting with {paybacks.REFERENCE_PREFIX!r} are reserved "
            "for the automatic paybacks of late approvals"
        )
    if conn.in_transaction():
        raise ValueError("request_refund commits its own transaction; pass a connection outside one")
    with conn.begin():
        result = _request(conn, order_ref, amount_cents, full, reference, reason, run_id)
    if result.refund.status == "rejected":
        raise RefundRefused(result.refund.last_error or "refused", result)
    return result


def _request(
    conn: Connection,
    order_ref: str,
    amount_cents: int | None,
    full: bool,
    reference: str,
    reason: str | None,
    run_id: str | None,
) -> RefundRequestResult:
    # FOR NO KEY UPDATE serialises every refund decision on this order, without blocking
    # inserts that merely reference the order (notifications). SQLite: BEGIN IMMEDIATE.
    order = conn.execute(
        select(orders.c.id, orders.c.order_ref, orders.c.status, orders.c.total_cents, orders.c.payment_ref)
        .where(orders.c.order_ref == order_ref)
        .with_for_update(key_share=True)
    ).one_or_none()

    existing = get_refund(conn, reference)
    if existing is not None:
        return _replay(existing, order_ref, amount_cents, full)
    if order is None:
        raise RefundRefused(f"order {order_ref} does not exist")

    processed, in_flight = conn.execute(
        select(
            func.coalesce(func.sum(case((refunds.c.status == "processed", refunds.c.amount_cents), else_=0)), 0),
            func.coalesce(func.sum(case((refunds.c.status.in_(IN_FLIGHT), refunds.c.amount_cents), else_=0)), 0),
        ).where(refunds.c.order_id == order.id, refunds.c.status.in_(COUNTED))
    ).one()
    processed, in_flight = int(processed), int(in_flight)  # PostgreSQL sums BIGINT as NUMERIC
    remaining = order.total_cents - processed - in_flight
    amount = remaining if full else amount_cents
    standing = f"total {plain(order.total_cents)}, refunded {plain(processed)}, in flight {plain(in_flight)}"

    refusal = None
    if order.status not in REFUNDABLE_STATUSES:
        refusal = (
            f"order {order_ref} is {order.status}: only finalized, shipped or delivered orders can be refunded"
        )
    elif order.payment_ref is None:
        refusal = f"order {order_ref} has no payment to refund"
    elif full and remaining <= 0:
        refusal = f"order {order_ref} has nothing left to refund ({standing})"
    elif amount <= 0:
        refusal = f"amount {plain(amount)} is not positive: a refund must be at least 0.01"
    elif amount > remaining:
        refusal = (
            f"amount {plain(amount)} exceeds the {plain(remaining)} left to refund "
            f"on order {order_ref} ({standing})"
        )
    if amount < 0:
        raise RefundRefused(refusal)  # a negative amount cannot be stored

    is_full = full or (amount > 0 and processed + in_flight + amount == order.total_cents)
    status = "rejected" if refusal else "pending"
    now = utcnow()
    # A concurrent request with this reference for another order holds no lock we wait on;
    # the unique index decides, and the loser reads the winner's row.
    refund_id = conn.execute(
        insert_new(conn, refunds, ["reference"])
        .values(
            order_id=order.id,
            reference=reference,
            amount_cents=amount,
            type="full" if is_full else "partial",
            status=status,
            reason=reason,
            last_error=refusal,
            requested_at=now,
            next_attempt_at=now,
        )
        .returning(refunds.c.id)
    ).scalar_one_or_none()
    if refund_id is None:
        return _replay(get_refund(conn, reference), order_ref, amount_cents, full)

    conn.execute(
        insert(refund_events).values(
            refund_id=refund_id, from_status=None, to_status=status, reason=refusal or reason,
            run_id=run_id, created_at=now,
        )
    )
    return RefundRequestResult(get_refund(conn, reference), created=True)


def _replay(existing: Refund, order_ref: str, amount_cents: int | None, full: bool) -> RefundRequestResult:
    same_amount = existing.type == "full" if full else existing.amount_cents == amount_cents
    if existing.order_ref == order_ref and same_amount:
        return RefundRequestResult(existing, created=False)
    asked = "the full remaining amount" if full else plain(amount_cents)
    raise RefundReferenceConflict(
        f"reference {existing.reference!r} is already used by refund #{existing.id} "
        f"(order {existing.order_ref}, {plain(existing.amount_cents)}, {existing.type}, "
        f"{existing.status}); this request (order {order_ref}, {asked}) differs"
    )
