"""Operator transitions on many orders at once: cancel, ship, deliver.

Each call locks the named orders, applies the move to every order the state table allows, and
reports the others (illegal for their current state, or unknown refs) instead of failing all.
Cancelling an order that holds reserved stock releases it in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Text, select

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import rowset
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain import inventory
from ordersys_pipelines.domain.orders.states import (
    CANCELLED,
    DELIVERED,
    HOLDS_STOCK,
    SHIPPED,
    IllegalTransition,
    sources,
    transition,
)

NOTIFICATION = {CANCELLED: "order_cancelled", SHIPPED: "order_shipped", DELIVERED: "order_delivered"}


@dataclass
class BulkOutcome:
    changed: list[str] = field(default_factory=list)
    refused: list[IllegalTransition] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _move(
    conn: Connection, refs: Iterable[str], to_status: str, reason: str | None, run_id: str | None,
    now: datetime | None,
) -> BulkOutcome:
    now = now or utcnow()
    wanted = sorted({ref.strip() for ref in refs if ref and ref.strip()})
    names = rowset(conn, ((ref,) for ref in wanted), [("order_ref", Text())], "refs")
    statement = (
        select(orders.c.id, orders.c.order_ref, orders.c.status)
        .where(orders.c.order_ref.in_(select(names.c.order_ref)))
        .order_by(orders.c.id)
    )
    statement = lock_rows(conn, statement)
    rows = conn.execute(statement).all()
    found = {row.order_ref for row in rows}
    permitted = sources(to_status)
    outcome = BulkOutcome(
        changed=sorted(row.order_ref for row in rows if row.status in permitted),
        refused=[IllegalTransition(r.order_ref, r.status, to_status)
                 for r in sorted(rows, key=lambda r: r.order_ref) if r.status not in permitted],
        unknown=[ref for ref in wanted if ref not in found],
    )
    legal = [row.id for row in rows if row.status in permitted]
    if not legal:
        return outcome
    holding = [row.id for row in rows if row.status in permitted and row.status in HOLDS_STOCK]
    if to_status == CANCELLED and holding:
        inventory.lock_products_of_orders(conn, holding)
        inventory.release_reserved(conn, holding, now)
    transition(conn, legal, to_status, reason, run_id, now=now, notify=(NOTIFICATION[to_status],))
    return outcome


def cancel(conn: Connection, refs: Iterable[str], *, reason: str = "cancelled by operator",
           run_id: str | None = None, now: datetime | None = None) -> BulkOutcome:
    """Cancel orders not yet finalized (created, reserved, awaiting payment), releasing stock."""
    return _move(conn, refs, CANCELLED, reason, run_id, now)


def ship(conn: Connection, refs: Iterable[str], *, run_id: str | None = None,
         now: datetime | None = None) -> BulkOutcome:
    """Finalized orders → shipped."""
    return _move(conn, refs, SHIPPED, None, run_id, now)


def deliver(conn: Connection, refs: Iterable[str], *, run_id: str | None = None,
            now: datetime | None = None) -> BulkOutcome:
    """Shipped orders → delivered."""
    return _move(conn, refs, DELIVERED, None, run_id, now)
