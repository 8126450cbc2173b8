"""Orders to refund, made directly in the database, and small helpers for the refund tests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select

from ordersys_pipelines.db.schema import customers, gateway_calls, order_lines, orders, products, refunds
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.refunds.processing import RefundPolicy

NO_WAIT = RefundPolicy(max_attempts=3, backoff_seconds=0, lease_seconds=60)


def make_order(engine, ref: str = "O-1", total_cents: int = 10_000, status: str = "finalized",
               payment_ref: str | None = "auto") -> int:
    """A customer, a product and an order of one line worth `total_cents`."""
    with engine.begin() as conn:
        customer_id = conn.execute(
            insert(customers).values(email=f"{ref.lower()}@example.com", name=f"Customer {ref}")
            .returning(customers.c.id)
        ).scalar_one()
        product_id = conn.execute(
            insert(products).values(sku=f"SKU-{ref}", name="thing", price_cents=total_cents, stock=10)
            .returning(products.c.id)
        ).scalar_one()
        order_id = conn.execute(
            insert(orders).values(
                order_ref=ref, customer_id=customer_id, order_date=datetime(2024, 3, 1, 12), status=status,
                total_cents=total_cents, payment_ref=f"PAY-{ref}" if payment_ref == "auto" else payment_ref,
            ).returning(orders.c.id)
        ).scalar_one()
        conn.execute(insert(order_lines).values(order_id=order_id, line_no=1, product_id=product_id, quantity=1,
                                                unit_price_cents=total_cents))
    return order_id


def gateway(failure_rate: float = 0.0, seed: int | None = 7) -> GatewayConfig:
    return GatewayConfig(secret="test-secret", refund_failure_rate=failure_rate, seed=seed)


def refund_rows(engine, **where) -> list:
    query = select(refunds).order_by(refunds.c.id)
    for name, value in where.items():
        query = query.where(refunds.c[name] == value)
    with engine.connect() as conn:
        return conn.execute(query).all()


def gateway_refund_calls(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(gateway_calls).where(gateway_calls.c.kind == "refund").order_by(gateway_calls.c.id)
        ).all()


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
