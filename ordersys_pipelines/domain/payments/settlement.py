"""Settle payments: apply the gateway's callbacks and expire payments that never got one.

A batch of pending callbacks that are due (`available_at <= now`) is locked and settled in one
transaction: each callback is checked (signature, payload, known payment reference, amount
equal to the order total, order still awaiting payment); approvals finalize their orders
(stock −= q, reserved −= q), declines fail them and release the reservation, and every bad
callback is marked rejected with its reason and changes no order. An approval for an order
already cancelled or failed is a late approval: the order stays as it is and the payment is
paid back (see paybacks). Every verified event's status and amount are kept on its callback
for the reconciliation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Connection, Engine, Text, and_, func, or_, select, update

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids, rowset
from ordersys_pipelines.db.schema import orders, payment_callbacks
from ordersys_pipelines.domain import claims, inventory
from ordersys_pipelines.domain.isolation import in_savepoint, isolate
from ordersys_pipelines.domain.orders import poison
from ordersys_pipelines.domain.orders.states import AWAITING_PAYMENT, CANCELLED, FAILED, FINALIZED, transition
from ordersys_pipelines.domain.payments import paybacks
from ordersys_pipelines.domain.payments.callbacks import CallbackError, epoch, parse_event
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.payments.paybacks import LateApproval, start_paybacks
from ordersys_pipelines.domain.payments.signing import SignatureError, verify
from ordersys_pipelines.domain.readable import look


@dataclass
class SettlementResult:
    claimed: int = 0
    finalized: list[int] = field(default_factory=list)
    declined: dict[int, str] = field(default_factory=dict)  # order id → reason
    rejected: dict[int, str] = field(default_factory=dict)  # callback id → reason
    duplicates: int = 0  # extra deliveries of the callbacks settled here
    late_approvals: dict[int, str] = field(default_factory=dict)  # callback id → what was done (a payback)
    paybacks_started: int = 0  # paybacks added here (a replayed late approval adds none)

    @property
    def applied(self) -> int:
        return len(self.finalized) + len(self.declined) + len(self.late_approvals)

    def rejected_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason.split(":", 1)[0] for reason in self.rejected.values()))

    def merge(self, other: SettlementResult) -> None:
        self.finalized += other.finalized
        self.declined.update(other.declined)
        self.rejected.update(other.rejected)
        self.duplicates += other.duplicates
        self.late_approvals.update(other.late_approvals)
        self.paybacks_started += other.paybacks_started


def due_callbacks(now: datetime):
    return and_(payment_callbacks.c.status == "pending", payment_callbacks.c.available_at <= now)


def claim_callbacks(conn: Connection, *, limit: int, claimant: str, lease_seconds: int, now: datetime) -> list[int]:
    return claims.claim(
        conn, payment_callbacks, where=due_callbacks(now), order_by=[payment_callbacks.c.id], limit=limit,
        claimant=claimant, lease_seconds=lease_seconds,
    )


def own_claimed(conn: Connection, *, limit: int, claimant: str) -> list[int]:
    """Pending callbacks still claimed by `claimant`: an earlier attempt of the same run claimed
    them and died before settling (settling is one transaction, so nothing of it was kept)."""
    return list(conn.execute(
        select(payment_callbacks.c.id)
        .where(payment_callbacks.c.status == "pending", payment_callbacks.c.claimed_by == claimant)
        .order_by(payment_callbacks.c.id).limit(limit)
    ).scalars())


def apply_claimed(
    conn: Connection,
    callback_ids: Sequence[int],
    *,
    claimant: str,
    config: GatewayConfig,
    run_id: str | None,
    now: datetime | None = None,
) -> SettlementResult:
    now = now or utcnow()
    statement = (
        select(payment_callbacks.c.id, payment_callbacks.c.payload, payment_callbacks.c.signature,
               payment_callbacks.c.available_at, payment_callbacks.c.deliveries)
        .where(in_ids(conn, payment_callbacks.c.id, callback_ids), payment_callbacks.c.status == "pending",
               or_(payment_callbacks.c.claimed_by == claimant, claims.claimable(payment_callbacks)))
        .order_by(payment_callbacks.c.id)
    )
    statement = lock_rows(conn, statement)
    callbacks = conn.execute(statement).all()
    result = SettlementResult(claimed=len(callback_ids), duplicates=sum(c.deliveries - 1 for c in callbacks))
    if not callbacks:
        return result

    events: dict[int, dict] = {}
    for callback in callbacks:
        try:
            # The tolerance was checked against the delivery time when the callback was received.
            verify(callback.payload.encode(), callback.signature or "", config.accepted_secrets,
                   config.callback_tolerance_seconds, epoch(callback.available_at))
            events[callback.id] = parse_event(callback.payload)
        except SignatureError as exc:
            result.rejected[callback.id] = f"bad signature: {exc}"
        except CallbackError as exc:
            result.rejected[callback.id] = f"malformed: {exc}"

    refs = rowset(conn, {(e["payment_ref"],) for e in events.values()}, [("payment_ref", Text())], "refs")
    order_query = (
        select(orders.c.id, orders.c.order_ref, orders.c.status, orders.c.total_cents, orders.c.payment_ref)
        .where(orders.c.payment_ref.in_(select(refs.c.payment_ref)))
        .order_by(orders.c.id)
    )
    order_query = lock_rows(conn, order_query)
    by_ref = {row.payment_ref: row for row in conn.execute(order_query)}

    status = {row.id: row.status for row in by_ref.values()}  # as it will be after this batch
    late: list[LateApproval] = []
    for callback_id, event in events.items():
        order = by_ref.get(event["payment_ref"])
        if order is None:
            result.rejected[callback_id] = f"unknown payment reference: {event['payment_ref']}"
        elif event["amount_cents"] != order.total_cents:
            result.rejected[callback_id] = (
                f"amount mismatch: {event['amount_cents']} cents, order {order.order_ref} totals {order.total_cents}"
            )
        elif event["status"] == "approved" and status[order.id] in (CANCELLED, FAILED):
            late.append(LateApproval(order.id, order.order_ref, status[order.id], order.payment_ref,
                                     event["amount_cents"]))
            result.late_approvals[callback_id] = (
                f"late approval: order {order.order_ref} is {status[order.id]}; "
                f"paid back by refund {paybacks.reference(order.payment_ref)}"
            )
        elif status[order.id] != AWAITING_PAYMENT:
            result.rejected[callback_id] = f"not awaiting payment: order {order.order_ref} is {status[order.id]}"
        elif event["status"] == "approved":
            result.finalized.append(order.id)
            status[order.id] = FINALIZED
        else:
            result.declined[order.id] = f"payment declined: {event.get('reason') or 'no reason given'}"
            status[order.id] = FAILED

    if result.finalized:
        transition(conn, result.finalized, FINALIZED, None, run_id, expected_from=AWAITING_PAYMENT, now=now,
                   notify=("order_confirmed", "payment_succeeded"))
    if result.declined:
        transition(conn, result.declined, FAILED, result.declined, run_id, expected_from=AWAITING_PAYMENT, now=now,
                   notify=("payment_failed", "order_failed"))

    if late:
        result.paybacks_started = len(start_paybacks(conn, late, run_id=run_id, now=now))

    outcome = rowset(
        conn,
        ((c.id, "rejected" if c.id in result.rejected else "applied", _outcome_reason(result, c.id),
          *_event_facts(events.get(c.id)))
         for c in callbacks),
        [("id", BigInteger()), ("status", Text()), ("reason", Text()), ("event_status", Text()),
         ("amount_cents", BigInteger())],
        "outcome",
    )
    conn.execute(
        update(payment_callbacks)
        .where(payment_callbacks.c.id == outcome.c.id)
        .values(status=outcome.c.status, reason=outcome.c.reason, event_status=outcome.c.event_status,
                amount_cents=outcome.c.amount_cents, processed_at=now, run_id=run_id,
                claimed_by=None, claim_expires_at=None)
    )
    # Stock last: every settlement touches the same hot product rows, so their locks are taken
    # just before commit and concurrent settlement runs wait on each other only that long.
    settled = result.finalized + list(result.declined)
    if settled:
        inventory.lock_products_of_orders(conn, settled)
        inventory.commit_reserved(conn, result.finalized, now)
        inventory.release_reserved(conn, list(result.declined), now)
    return result


def _outcome_reason(result: SettlementResult, callback_id: int) -> str | None:
    return result.late_approvals.get(callback_id) or result.rejected.get(callback_id)


def _event_facts(event: dict | None) -> tuple[str | None, int | None]:
    """The verified event's status and amount (an amount too large for BIGINT is left out)."""
    if event is None:
        return None, None
    amount = event["amount_cents"]
    return event["status"], amount if amount < 2**63 else None


def lock_due_callbacks(conn: Connection, *, limit: int, now: datetime) -> list[int]:
    """Lock up to `limit` due, unclaimed callbacks for this transaction (nothing written)."""
    return claims.lock_claimable(conn, payment_callbacks, where=due_callbacks(now),
                                 order_by=[payment_callbacks.c.id], limit=limit)


def settle_batch(
    engine: Engine, *, config: GatewayConfig, batch_size: int, claimant: str, lease_seconds: int, run_id: str | None
) -> SettlementResult:
    """Take up to `batch_size` due callbacks and settle them, in one transaction: settling calls
    nothing outside the database, so the row locks are the claim (no stamp to write and clear)
    and a run that dies rolls back and frees them at once. `lease_seconds` is kept for the
    callers' signature; callbacks a run stamped earlier (`claim_callbacks`, the claimant being
    the run id) are taken back first by a retried attempt of that run."""
    # No ANALYZE here: the due callbacks are found through their partial index whatever the
    # statistics say, and the orders' statistics are the reservation's to refresh.
    now = utcnow()
    with engine.begin() as conn:
        ids = own_claimed(conn, limit=batch_size, claimant=claimant) or lock_due_callbacks(
            conn, limit=batch_size, now=now)
        if not ids:
            return SettlementResult()
        # A callback whose row (or whose order's) the settlement cannot read or write is
        # rejected alone with the reason; the others settle.
        batch = isolate(
            ids,
            in_savepoint(conn, lambda c, some: apply_claimed(c, some, claimant=claimant, config=config,
                                                             run_id=run_id)),
            fail=lambda errors: reject_callbacks(conn, errors, run_id=run_id),
            stage="settlement",
        )
    result = batch.merged_into(SettlementResult(claimed=len(ids)))
    result.rejected.update({i: poison.reason("settlement", error) for i, error in batch.failed.items()})
    return result


def reject_callbacks(conn: Connection, errors: dict[int, str], *, run_id: str | None) -> None:
    """Mark isolated callbacks rejected with the reason; their orders are left as they are."""
    with conn.begin_nested():
        outcome = rowset(conn, ((i, poison.reason("settlement", e)) for i, e in errors.items()),
                         [("id", BigInteger()), ("reason", Text())], "poisoned")
        conn.execute(
            update(payment_callbacks)
            .where(payment_callbacks.c.id == outcome.c.id, payment_callbacks.c.status == "pending")
            .values(status="rejected", reason=outcome.c.reason, processed_at=utcnow(), run_id=run_id,
                    claimed_by=None, claim_expires_at=None)
        )


def overdue(timeout_seconds: int, now: datetime):
    return and_(
        orders.c.status == AWAITING_PAYMENT,
        orders.c.status_changed_at < now - timedelta(seconds=timeout_seconds),
    )


def expire_overdue(
    conn: Connection, timeout_seconds: int, *, run_id: str | None, limit: int, now: datetime | None = None
) -> list[int]:
    """Fail up to `limit` orders awaiting payment for longer than the timeout and release their
    stock. Orders another transaction is settling right now are skipped (next time)."""
    now = now or utcnow()
    candidates = (
        select(orders.c.id).where(overdue(timeout_seconds, now)).order_by(orders.c.status_changed_at, orders.c.id)
        .limit(limit)
    )
    candidates = lock_rows(conn, candidates, skip_locked=True)
    ids = list(conn.execute(candidates).scalars())
    if not ids:
        return []

    def expire(conn: Connection, some: list[int]) -> list[int]:
        inventory.lock_products_of_orders(conn, some)
        inventory.release_reserved(conn, some, now)
        reason = f"payment expired: no confirmation within {timeout_seconds} s"
        transition(conn, some, FAILED, reason, run_id, expected_from=AWAITING_PAYMENT, now=now,
                   notify=("order_failed",))
        return some

    # An order whose stock cannot be given back (or that cannot be read) fails alone.
    batch = isolate(ids, in_savepoint(conn, expire), stage="expiry",
                    fail=lambda errors: poison.fail_orders(conn, errors, stage="expiry",
                                                           expected_from=AWAITING_PAYMENT, run_id=run_id, now=now))
    return sorted(i for part in batch.results for i in part) + sorted(batch.failed)


def next_due(conn: Connection, timeout_seconds: int) -> datetime | None:
    """When settlement will next have work: the earliest pending callback or payment deadline."""
    [callback] = look(conn, select(func.min(payment_callbacks.c.available_at))
                      .where(payment_callbacks.c.status == "pending"), payment_callbacks.c.available_at)
    [deadline] = look(conn, select(func.min(orders.c.status_changed_at))
                      .where(orders.c.status == AWAITING_PAYMENT), orders.c.status_changed_at)
    if deadline is not None:
        deadline += timedelta(seconds=timeout_seconds)
    moments = [m for m in (callback, deadline) if m is not None]
    return min(moments) if moments else None


def pending(conn: Connection, timeout_seconds: int, now: datetime | None = None, cap: int = 100_000) -> int:
    """How many callbacks are due plus orders overdue (counted up to `cap` each; a sensor's look)."""
    now = now or utcnow()
    due = select(payment_callbacks.c.id).where(due_callbacks(now), claims.claimable(payment_callbacks)).limit(cap)
    late = select(orders.c.id).where(overdue(timeout_seconds, now)).limit(cap)
    count = select(func.count()).select_from
    return conn.execute(count(due.subquery())).scalar_one() + conn.execute(count(late.subquery())).scalar_one()


