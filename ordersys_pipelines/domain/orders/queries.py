"""Read models for operators: one order with its lines and audit trail."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Row, func, select

from ordersys_pipelines.db.schema import customers, import_files, order_events, order_lines, orders, products


@dataclass(frozen=True)
class OrderDetails:
    order: Row
    lines: list[Row]
    events: list[Row]


def order_details(conn: Connection, order_ref: str) -> OrderDetails | None:
    order = conn.execute(
        select(
            orders,
            func.coalesce(customers.c.email, customers.c.customer_ref).label("customer"),
            customers.c.name.label("customer_name"),
            import_files.c.original_name.label("import_file"),
        )
        .join(customers, customers.c.id == orders.c.customer_id)
        .outerjoin(import_files, import_files.c.id == orders.c.import_file_id)
        .where(orders.c.order_ref == order_ref)
    ).one_or_none()
    if order is None:
        return None
    lines = conn.execute(
        select(order_lines.c.line_no, products.c.sku, products.c.name, order_lines.c.quantity,
               order_lines.c.unit_price_cents, (order_lines.c.quantity * order_lines.c.unit_price_cents).label("amount_cents"))
        .join(products, products.c.id == order_lines.c.product_id)
        .where(order_lines.c.order_id == order.id)
        .order_by(order_lines.c.line_no)
    ).all()
    events = conn.execute(
        select(order_events.c.created_at, order_events.c.from_status, order_events.c.to_status,
               order_events.c.reason, order_events.c.run_id)
        .where(order_events.c.order_id == order.id)
        .order_by(order_events.c.id)
    ).all()
    return OrderDetails(order, lines, events)
