"""Send reserved orders to the payment gateway: each gets a payment reference and waits for
the gateway's callback (reserved → awaiting_payment)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain import claims
from ordersys_pipelines.domain.isolation import in_savepoint, isolate
from ordersys_pipelines.domain.orders import poison
from ordersys_pipelines.domain.orders.reservation import FIFO
from ordersys_pipelines.domain.orders.states import AWAITING_PAYMENT, RESERVED, transition
from ordersys_pipelines.domain.payments import gateway
from ordersys_pipelines.domain.payments.config import GatewayConfig


@dataclass
class InitiationResult:
    claimed: int = 0
    initiated: dict[int, str] = field(default_factory=dict)  # order id → payment reference
    amount_cents: int = 0


def claim_reserved(conn: Connection, *, limit: int, claimant: str, lease_seconds: int) -> list[int]:
    return claims.claim(
        conn, orders, where=orders.c.status == RESERVED, order_by=FIFO, limit=limit, claimant=claimant,
        lease_seconds=lease_seconds,
    )


def own_reserved(conn: Connection, *, limit: int, claimant: str) -> list[int]:
    """Reserved orders still claimed by `claimant` (the reservation keeps its claim)."""
    return list(conn.execute(
        select(orders.c.id).where(orders.c.status == RESERVED, orders.c.claimed_by == claimant)
        .order_by(*FIFO).limit(limit)
    ).scalars())


def initiate_claimed(
    conn: Connection,
    order_ids: Sequence[int],
    *,
    claimant: str,
    config: GatewayConfig,
    run_id: str | None,
    now: datetime | None = None,
) -> InitiationResult:
    now = now or utcnow()
    locked = select(orders.c.id, orders.c.order_ref, orders.c.total_cents).where(
        in_ids(conn, orders.c.id, order_ids), orders.c.status == RESERVED, orders.c.claimed_by == claimant
    )
    locked = lock_rows(conn, locked.order_by(orders.c.id))
    requests = [gateway.PaymentRequest(row.id, row.order_ref, row.total_cents) for row in conn.execute(locked)]
    if not requests:
        return InitiationResult(claimed=len(order_ids))
    refs = gateway.initiate(conn, requests, config, now)
    transition(
        conn, refs, AWAITING_PAYMENT, {i: f"payment {ref} initiated" for i, ref in refs.items()}, run_id,
        expected_from=RESERVED, now=now, set_columns={"payment_ref": refs},
    )
    return InitiationResult(len(order_ids), refs, sum(r.amount_cents for r in requests))


def initiate_batch(
    engine: Engine, *, config: GatewayConfig, batch_size: int, claimant: str, lease_seconds: int, run_id: str | None
) -> InitiationResult:
    """Start payments for up to `batch_size` reserved orders: those `claimant` reserved itself
    (it kept their claim) first, then others' whose claim lapsed or ended (claimed, committed)."""
    with engine.begin() as conn:
        ids = own_reserved(conn, limit=batch_size, claimant=claimant)
        if len(ids) < batch_size:
            ids += claim_reserved(conn, limit=batch_size - len(ids), claimant=claimant, lease_seconds=lease_seconds)
    if not ids:
        return InitiationResult()
    with engine.begin() as conn:
        # An order the gateway request cannot be built or stored for fails alone.
        batch = isolate(
            ids,
            in_savepoint(conn, lambda c, some: initiate_claimed(c, some, claimant=claimant, config=config,
                                                                run_id=run_id)),
            fail=lambda errors: poison.fail_orders(conn, errors, stage="payment initiation",
                                                   expected_from=RESERVED, run_id=run_id),
            stage="payment initiation",
        )
    result = InitiationResult(claimed=len(ids))
    for part in batch.results:
        result.initiated.update(part.initiated)
        result.amount_cents += part.amount_cents
    return result
