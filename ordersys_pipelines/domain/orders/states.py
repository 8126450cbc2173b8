"""The order state machine: ONE table decides what may follow what, and `transition` is the only
way an order's status changes — set-based, recorded in `order_events` with the run that did it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import BigInteger, Connection, Text, insert, literal, null, select, update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids, rowset
from ordersys_pipelines.db.schema import order_events, orders
from ordersys_pipelines.domain.notifications.outbox import ORDER_TYPES, enqueue_for_orders
from ordersys_pipelines.domain.orders import one_statement

CREATED = "created"
RESERVED = "reserved"
AWAITING_PAYMENT = "awaiting_payment"
FINALIZED = "finalized"
FAILED = "failed"
CANCELLED = "cancelled"
SHIPPED = "shipped"
DELIVERED = "delivered"

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({RESERVED, FAILED, CANCELLED}),
    RESERVED: frozenset({AWAITING_PAYMENT, FAILED, CANCELLED}),
    AWAITING_PAYMENT: frozenset({FINALIZED, FAILED, CANCELLED}),
    FINALIZED: frozenset({SHIPPED}),
    SHIPPED: frozenset({DELIVERED}),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    DELIVERED: frozenset(),
}
STATES = tuple(TRANSITIONS)
# States the workflow has nothing more to do for (an operator may still ship or deliver).
SETTLED = frozenset({FINALIZED, FAILED, CANCELLED, SHIPPED, DELIVERED})
# States that hold reserved stock.
HOLDS_STOCK = frozenset({RESERVED, AWAITING_PAYMENT})


class IllegalTransition(ValueError):
    """A transition the state table refuses; names the order, its state and the requested one."""

    def __init__(self, order_ref: str, current: str, requested: str):
        self.order_ref, self.current, self.requested = order_ref, current, requested
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "nothing (final state)"
        super().__init__(f"order {order_ref}: cannot go from {current} to {requested} (allowed: {allowed})")


def allowed(current: str, requested: str) -> bool:
    return requested in TRANSITIONS.get(current, frozenset())


def sources(requested: str) -> frozenset[str]:
    """The states from which `requested` may follow."""
    return frozenset(state for state, nexts in TRANSITIONS.items() if requested in nexts)


def _permitted_sources(to_status: str, expected_from: str | Iterable[str] | None) -> frozenset[str]:
    if to_status not in TRANSITIONS:
        raise ValueError(f"unknown order state {to_status!r}; states: {', '.join(STATES)}")
    permitted = sources(to_status)
    if expected_from is not None:
        permitted &= {expected_from} if isinstance(expected_from, str) else set(expected_from)
    return permitted


def partition(
    conn: Connection, order_ids: Iterable[int], to_status: str, *, expected_from: str | Iterable[str] | None = None
) -> tuple[list[int], list[IllegalTransition]]:
    """Split orders into those that may move to `to_status` now and the refusals (by order ref)."""
    permitted = _permitted_sources(to_status, expected_from)
    rows = conn.execute(
        select(orders.c.id, orders.c.order_ref, orders.c.status)
        .where(in_ids(conn, orders.c.id, order_ids))
        .order_by(orders.c.order_ref)
    ).all()
    legal = [row.id for row in rows if row.status in permitted]
    refused = [IllegalTransition(row.order_ref, row.status, to_status) for row in rows if row.status not in permitted]
    return legal, refused


def transition(
    conn: Connection,
    order_ids: Iterable[int],
    to_status: str,
    reason: str | Mapping[int, str | None] | None = None,
    run_id: str | None = None,
    *,
    expected_from: str | Iterable[str] | None = None,
    now: datetime | None = None,
    claim_for: tuple[str, datetime] | None = None,
    set_columns: Mapping[str, Mapping[int, str]] | None = None,
    notify: Sequence[str] = (),
) -> int:
    """Move every order in `order_ids` to `to_status` and record one event each; all or none.

    `reason` is one text for all orders or a mapping order id → text; it becomes the orders'
    `status_reason` (what notifications tell the customer). `expected_from` narrows the states
    the caller expects the orders in. Raises IllegalTransition (nothing changed) when any order
    may not make the move. Ends any claim on the orders, or with `claim_for=(claimant,
    expires_at)` claims them for the caller's next step in the same write. `set_columns` sets
    further text columns per order in the same UPDATE (e.g. the payment reference) — one write
    per order, not two. `notify` names the customer notifications to queue for every order
    moved (the outbox, see domain.notifications.outbox). Returns the number of orders moved.

    On PostgreSQL all of it is ONE statement (the UPDATE … RETURNING feeds the event and
    notification INSERTs), in a savepoint: when it moves fewer orders than asked, it is undone
    and the refusal explained. Elsewhere: a check, then one statement per table.
    """
    ids = sorted(set(order_ids))
    if not ids:
        return 0
    for kind in notify:
        if kind not in ORDER_TYPES:
            raise ValueError(f"unknown order notification type {kind!r}; valid: {ORDER_TYPES}")
    permitted = _permitted_sources(to_status, expected_from)
    change = _Change(conn, ids, to_status, reason, run_id, now or utcnow(), claim_for, dict(set_columns or {}))
    if conn.dialect.name == "postgresql":
        with conn.begin_nested() as savepoint:
            moved = conn.execute(one_statement.transition(change, permitted, notify)).scalar_one()
            if moved == len(ids):
                return moved
            savepoint.rollback()
        _refuse(conn, ids, to_status, expected_from)
        raise RuntimeError(f"{len(ids) - moved} of {len(ids)} orders changed state concurrently; retry")
    _refuse(conn, ids, to_status, expected_from)
    conn.execute(insert(order_events).from_select(
        ["order_id", "from_status", "reason", "to_status", "run_id", "created_at"], change.event_rows()))
    moved = conn.execute(change.update().where(orders.c.status.in_(sorted(sources(to_status))))).rowcount
    if moved != len(ids):  # the caller did not lock the orders and someone else moved them
        raise RuntimeError(f"{len(ids) - moved} of {len(ids)} orders changed state concurrently; retry")
    for kind in notify:
        enqueue_for_orders(conn, kind, select(orders.c.id).where(in_ids(conn, orders.c.id, ids)))
    return moved


def _refuse(conn: Connection, ids: list[int], to_status: str, expected_from) -> None:
    """Raise what keeps any of the orders from moving (IllegalTransition, unknown ids)."""
    legal, refused = partition(conn, ids, to_status, expected_from=expected_from)
    if refused:
        raise refused[0]
    if len(legal) != len(ids):
        missing = sorted(set(ids) - set(legal))
        raise ValueError(f"unknown order id(s): {missing[:10]}")


class _Change:
    """The columns one transition writes, for either statement shape."""

    def __init__(self, conn, ids, to_status, reason, run_id, now, claim_for, extra):
        self.conn, self.ids, self.to_status, self.run_id, self.now = conn, ids, to_status, run_id, now
        self.per_order = None
        if isinstance(reason, Mapping) or extra:
            self.per_order = rowset(
                conn,
                ((i, reason.get(i) if isinstance(reason, Mapping) else reason, *(extra[c].get(i) for c in extra))
                 for i in ids),
                [("id", BigInteger()), *((name, Text()) for name in ["reason", *extra])],
                "per_order",
            )
            self.reason = self.per_order.c.reason
        else:
            self.reason = literal(reason, Text()) if reason is not None else null()
        self.extra = list(extra)
        claimant, expires_at = claim_for or (None, None)
        self.fixed = {"status": to_status, "status_changed_at": now, "updated_at": now, "claimed_by": claimant,
                      "claim_expires_at": expires_at}

    def values(self, source=None) -> dict:
        """The new column values; per-order ones from `source` (default: the row set)."""
        source = self.per_order if source is None else source
        if source is None:
            return {**self.fixed, "status_reason": self.reason}
        return {**self.fixed, "status_reason": source.c.reason, **{c: source.c[c] for c in self.extra}}

    def joined(self, statement, table):
        """`statement` restricted to the orders of the change (and joined to their values)."""
        statement = statement.where(in_ids(self.conn, table.c.id, self.ids))
        if self.per_order is not None:
            statement = statement.where(table.c.id == self.per_order.c.id)
        return statement

    def update(self):
        return self.joined(update(orders), orders).values(**self.values())

    def event_rows(self):
        """(order id, from status, reason, to status, run, time) per order, read before the UPDATE."""
        return self.joined(select(orders.c.id, orders.c.status, self.reason), orders).add_columns(
            literal(self.to_status), literal(self.run_id, Text()), literal(self.now))
