"""A transition as ONE PostgreSQL statement: data-modifying CTEs.

    WITH moved AS (UPDATE orders … FROM (the orders as they were) RETURNING id, old status, …),
         evented AS (INSERT INTO order_events SELECT … FROM moved),
         notified AS (INSERT INTO notifications SELECT … FROM moved JOIN customers … ON CONFLICT DO NOTHING)
    SELECT count(*) FROM moved

One round trip and one pass over the orders instead of a check, an INSERT … SELECT that reads
the orders, an UPDATE that reads them again and an INSERT per notification type. The event and
notification rows are built from what the UPDATE returned (a statement's parts all see the
snapshot from before it, so reading `orders` again would see the old reason). The notification
rows are those domain.notifications.outbox.enqueue_for_orders writes: same columns, same
dedup key, an order that already has one of a type gets no second.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, String, Text, cast, func, insert, literal, select, true, update, values
from sqlalchemy import column as sql_column

from ordersys_pipelines.db.dialect import insert_new
from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import customers, notifications, order_events, orders

EVENT_COLUMNS = ["order_id", "from_status", "reason", "to_status", "run_id", "created_at"]
NOTIFICATION_COLUMNS = ["order_id", "refund_id", "customer_id", "type", "recipient", "reason", "dedup_key"]


def transition(change, permitted: frozenset[str], notify: Sequence[str]) -> Select:
    """The statement for `change` (states._Change); it returns how many orders moved."""
    # The orders as they were, with their new per-order values: materialized, so the planner
    # joins the (estimated) row set to the orders once instead of scanning it per order.
    before = orders.alias("before")
    columns = [before.c.id, before.c.status.label("from_status")]
    old = select(*columns).where(in_ids(change.conn, before.c.id, change.ids, "old_ids"),
                                 before.c.status.in_(sorted(permitted)))
    if change.per_order is not None:
        old = old.add_columns(*[change.per_order.c[c] for c in ("reason", *change.extra)]).where(
            change.per_order.c.id == before.c.id)
    old = old.cte("old").prefix_with("MATERIALIZED")
    moved = (
        update(orders).where(orders.c.id == old.c.id)
        .values(**change.values(old if change.per_order is not None else None))
        .returning(orders.c.id, old.c.from_status, orders.c.status_reason, orders.c.customer_id)
        .cte("moved")
    )
    evented = insert(order_events).from_select(EVENT_COLUMNS, select(
        moved.c.id, moved.c.from_status, moved.c.status_reason, literal(change.to_status),
        literal(change.run_id, Text()), literal(change.now),
    )).cte("evented")
    ctes = [evented]
    if notify:
        ctes.append(_notifications(change, moved, notify).cte("notified"))
    return select(func.count()).select_from(moved).add_cte(*ctes)


def _notifications(change, moved, notify: Sequence[str]):
    kinds = values(sql_column("position"), sql_column("type", String), name="kinds").data(list(enumerate(notify)))
    source = (
        select(
            moved.c.id, literal(None).label("refund_id"), moved.c.customer_id, kinds.c.type, customers.c.email,
            moved.c.status_reason,
            (literal("order:") + cast(moved.c.id, String) + literal(":") + kinds.c.type).label("dedup_key"),
        )
        .select_from(moved.join(customers, customers.c.id == moved.c.customer_id).join(kinds, true()))
        .order_by(kinds.c.position, moved.c.id)  # as one INSERT per type would add them
    )
    return insert_new(change.conn, notifications, ["dedup_key"]).from_select(NOTIFICATION_COLUMNS, source)
