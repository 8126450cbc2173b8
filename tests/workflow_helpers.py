"""Test data for the workflow area: customers, products, orders and lines inserted directly
(the CSV import is another area's; these rows look like what it produces)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select

from ordersys_pipelines.db.schema import customers, import_files, order_lines, orders, products
from ordersys_pipelines.domain.payments.config import GatewayConfig

BASE_DATE = datetime(2024, 3, 1, 9, 0)
_counter = itertools.count()


def gateway_config(**overrides) -> GatewayConfig:
    values = {"secret": "test-secret", "seed": 7, "approval_rate": 1.0, "duplicate_rate": 0.0}
    values.update(overrides)
    return GatewayConfig(**values)


def add_products(conn, stock: dict[str, int], price_cents: int = 250) -> dict[str, int]:
    rows = [{"sku": sku, "name": f"Product {sku}", "price_cents": price_cents, "stock": qty} for sku, qty in stock.items()]
    conn.execute(insert(products), rows)
    return dict(conn.execute(select(products.c.sku, products.c.id).where(products.c.sku.in_(list(stock)))).all())


def add_import_file(conn, status: str = "completed") -> int:
    return conn.execute(
        insert(import_files)
        .values(content_hash=f"hash-{next(_counter)}", original_name="orders.csv", status=status)
        .returning(import_files.c.id)
    ).scalar_one()


def customer(conn, email: str = "ann@example.com") -> int:
    found = conn.execute(select(customers.c.id).where(customers.c.email == email)).scalar()
    if found:
        return found
    return conn.execute(insert(customers).values(email=email, name="Ann").returning(customers.c.id)).scalar_one()


def add_order(
    conn,
    ref: str,
    lines: list[tuple[str, int]],
    *,
    date: datetime | None = None,
    status: str = "created",
    import_file_id: int | None = None,
    unit_price_cents: int = 250,
    email: str = "ann@example.com",
) -> int:
    """An order with lines [(sku, quantity)]; the products must exist."""
    skus = dict(conn.execute(select(products.c.sku, products.c.id)).all())
    total = sum(q * unit_price_cents for _, q in lines)
    order_id = conn.execute(
        insert(orders)
        .values(order_ref=ref, customer_id=customer(conn, email), order_date=date or BASE_DATE, status=status,
                total_cents=total, import_file_id=import_file_id)
        .returning(orders.c.id)
    ).scalar_one()
    if lines:
        conn.execute(
            insert(order_lines),
            [{"order_id": order_id, "line_no": n, "product_id": skus[sku], "quantity": q,
              "unit_price_cents": unit_price_cents} for n, (sku, q) in enumerate(lines, 1)],
        )
    return order_id


def add_one_unit_orders(conn, count: int, sku: str, prefix: str = "O") -> list[int]:
    return [add_order(conn, f"{prefix}-{i:04d}", [(sku, 1)], date=BASE_DATE + timedelta(minutes=i))
            for i in range(count)]


def statuses(conn) -> dict[str, str]:
    return dict(conn.execute(select(orders.c.order_ref, orders.c.status)).all())


def status_counts(conn) -> dict[str, int]:
    return dict(conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all())


def stock(conn) -> dict[str, tuple[int, int]]:
    return {sku: (s, r) for sku, s, r in conn.execute(select(products.c.sku, products.c.stock, products.c.reserved))}
