"""The transactional outbox: callers write notification rows in the same transaction as the
state change that causes them. Rendering and sending happen later, in dispatch."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Connection, Select, String, cast, func, literal, select

from ordersys_pipelines.db.dialect import insert_new
from ordersys_pipelines.db.schema import customers, notifications, orders, refunds

ORDER_TYPES = (
    "order_confirmed",
    "order_failed",
    "payment_succeeded",
    "payment_failed",
    "order_cancelled",
    "order_shipped",
    "order_delivered",
)
# payment_returned: a payment approved after its order was cancelled or failed is being paid
# back (a payback refund).
REFUND_TYPES = ("refund_processed", "refund_failed", "payment_returned")
NOTIFICATION_TYPES = ORDER_TYPES + REFUND_TYPES


def _insert_ignoring_duplicates(conn: Connection, source: Select) -> int:
    columns = ["order_id", "refund_id", "customer_id", "type", "recipient", "reason", "dedup_key"]
    statement = insert_new(conn, notifications, ["dedup_key"]).from_select(columns, source)
    # rowcount of INSERT ... SELECT is not reported by every driver; RETURNING is.
    return len(conn.execute(statement.returning(notifications.c.id)).all())


def _ids_clause(column, ids: Iterable[int] | Select) -> ColumnElement[bool]:
    return column.in_(ids if isinstance(ids, Select) else list(ids))


def enqueue_for_orders(conn: Connection, notification_type: str, order_ids: Iterable[int] | Select) -> int:
    """One notification of `notification_type` per order (the order's status_reason is the
    reason); an order that already has one of that type gets no second. Returns rows added."""
    if notification_type not in ORDER_TYPES:
        raise ValueError(f"unknown order notification type {notification_type!r}; valid: {ORDER_TYPES}")
    source = (
        select(
            orders.c.id,
            literal(None).label("refund_id"),
            orders.c.customer_id,
            literal(notification_type).label("type"),
            customers.c.email,
            orders.c.status_reason,
            (literal("order:") + cast(orders.c.id, String) + literal(f":{notification_type}")).label("dedup_key"),
        )
        .join(customers, customers.c.id == orders.c.customer_id)
        .where(_ids_clause(orders.c.id, order_ids))
    )
    return _insert_ignoring_duplicates(conn, source)


def enqueue_for_refunds(conn: Connection, notification_type: str, refund_ids: Iterable[int] | Select) -> int:
    """One notification of `notification_type` per refund (reason: for a failed refund its last
    error, else its reason; a processed refund's reason is the request's, not an error of an
    attempt that was retried). Returns rows added."""
    if notification_type not in REFUND_TYPES:
        raise ValueError(f"unknown refund notification type {notification_type!r}; valid: {REFUND_TYPES}")
    reason = (
        refunds.c.reason if notification_type == "refund_processed"
        else func.coalesce(refunds.c.last_error, refunds.c.reason)
    )

    source = (
        select(
            refunds.c.order_id,
            refunds.c.id,
            orders.c.customer_id,
            literal(notification_type).label("type"),
            customers.c.email,
            reason,
            (literal("refund:") + cast(refunds.c.id, String) + literal(f":{notification_type}")).label("dedup_key"),
        )
        .join(orders, orders.c.id == refunds.c.order_id)
        .join(customers, customers.c.id == orders.c.customer_id)
        .where(_ids_clause(refunds.c.id, refund_ids))
    )
    return _insert_ignoring_duplicates(conn, source)
