"""The simulated gateway's refund call, keyed by the refund reference.

The gateway is an external system: it keeps its own record of every call in `gateway_calls`
(kind 'refund', unique per reference), so a call repeated with the same reference is recognised.
A reference that was paid out is answered with that earlier payout, never paid again; a
reference whose earlier attempts failed (nothing was paid) is attempted anew. Each call adds one
to `attempts`. Failures happen at `refund_failure_rate`, decided from seed + reference + attempt
number, so a seeded run is reproducible; rate 1.0 forces failures, 0.0 forces success.

Callers commit the call on its own transaction before recording what it means for the refund:
a crash between the two is what the reference makes safe.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select, update

from ordersys_pipelines.db.dialect import insert_new
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import gateway_calls
from ordersys_pipelines.domain.payments.config import GatewayConfig

KIND = "refund"
FAILURE_REASONS = ("gateway timeout", "processor unavailable", "issuer rejected the reversal")


class GatewayRefundError(ValueError):
    """A call the gateway refuses outright (a reference reused for another payment or amount)."""


@dataclass(frozen=True)
class RefundCall:
    reference: str
    payment_ref: str
    amount_cents: int


@dataclass(frozen=True)
class RefundOutcome:
    reference: str
    succeeded: bool
    reason: str | None  # why it failed
    attempts: int  # calls the gateway has received with this reference, this one included
    replayed: bool  # the reference was already paid out: this is that payout, nothing new was paid


def failure_reason(config: GatewayConfig, reference: str, attempt: int) -> str | None:
    """Whether attempt number `attempt` for `reference` fails, and why (None: it succeeds)."""
    rate = config.refund_failure_rate
    if rate <= 0.0:
        return None
    if config.seed is None:
        draw = random.random()
    else:
        digest = hashlib.sha256(f"{config.seed}:refund:{reference}:{attempt}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
    if rate >= 1.0 or draw < rate:
        return FAILURE_REASONS[int(draw * 1_000_000) % len(FAILURE_REASONS)]
    return None


UNIQUE_KEY = "uq_gateway_calls_kind_reference"


def refund_batch(conn: Connection, config: GatewayConfig, calls: list[RefundCall]) -> dict[str, RefundOutcome]:
    """Send refund calls (one per reference); outcomes by reference."""
    if not calls:
        return {}
    references = [call.reference for call in calls]
    if len(set(references)) != len(references):
        raise GatewayRefundError("a batch must not name the same refund reference twice")
    # Make sure each reference has its row, then lock the rows: concurrent calls with one
    # reference queue here instead of both deciding.
    conn.execute(
        insert_new(conn, gateway_calls, ["kind", "reference"]),
        [
            {"kind": KIND, "reference": c.reference, "payment_ref": c.payment_ref, "amount_cents": c.amount_cents,
             "outcome": "received", "attempts": 0, "created_at": utcnow()}
            for c in calls
        ],
    )
    rows = {
        row.reference: row
        for row in conn.execute(
            select(gateway_calls.c.id, gateway_calls.c.reference, gateway_calls.c.payment_ref,
                   gateway_calls.c.amount_cents, gateway_calls.c.outcome, gateway_calls.c.reason,
                   gateway_calls.c.attempts)
            .where(gateway_calls.c.kind == KIND, gateway_calls.c.reference.in_(references))
            .order_by(gateway_calls.c.id)
            .with_for_update()
            # InnoDB locks every row a locking read scans: on a small table MariaDB picks a full
            # scan and waits on (and deadlocks with) the fresh rows of concurrent batches.
            .with_hint(gateway_calls, f"FORCE INDEX ({UNIQUE_KEY})", "mysql")
            .with_hint(gateway_calls, f"FORCE INDEX ({UNIQUE_KEY})", "mariadb")
        )
    }
    outcomes: dict[str, RefundOutcome] = {}
    changes = []
    for call in calls:
        row = rows[call.reference]
        if (row.payment_ref, row.amount_cents) != (call.payment_ref, call.amount_cents):
            raise GatewayRefundError(
                f"refund reference {call.reference!r} was first sent for {row.amount_cents} cents of payment "
                f"{row.payment_ref}, now for {call.amount_cents} cents of payment {call.payment_ref}"
            )
        attempt = row.attempts + 1
        if row.outcome == "succeeded":
            outcome = RefundOutcome(call.reference, True, None, attempt, replayed=True)
        else:
            reason = failure_reason(config, call.reference, attempt)
            outcome = RefundOutcome(call.reference, reason is None, reason, attempt, replayed=False)
        outcomes[call.reference] = outcome
        changes.append({
            "call_id": row.id,
            "new_outcome": "succeeded" if outcome.succeeded else "failed",
            "new_reason": outcome.reason,
            "new_attempts": attempt,
        })
    conn.execute(
        update(gateway_calls)
        .where(gateway_calls.c.id == bindparam("call_id"))
        .values(outcome=bindparam("new_outcome"), reason=bindparam("new_reason"), attempts=bindparam("new_attempts")),
        changes,
    )
    return outcomes


def refund(conn: Connection, config: GatewayConfig, *, reference: str, payment_ref: str, amount_cents: int) -> RefundOutcome:
    """One refund call."""
    return refund_batch(conn, config, [RefundCall(reference, payment_ref, amount_cents)])[reference]


def payouts(conn: Connection, reference: str | None = None) -> int:
    """Refunds the gateway has paid out (in all, or for one reference): at most one per reference."""
    query = select(func.count()).where(gateway_calls.c.kind == KIND, gateway_calls.c.outcome == "succeeded")
    if reference is not None:
        query = query.where(gateway_calls.c.reference == reference)
    return conn.execute(query).scalar_one()
