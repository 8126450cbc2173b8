"""Stock bookkeeping for orders, set-based: reserve, commit (sell) and release quantities.

Every transaction that changes `products.reserved` or `products.stock` first locks the products
it touches with `lock_products_of_orders` / `lock_products` (PostgreSQL: FOR UPDATE, in id
order, so concurrent runs queue instead of deadlocking). The database check
`reserved <= stock` is the last line of defence; the allocation never relies on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import BigInteger, Connection, func, select, update

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.rowsets import in_ids, rowset
from ordersys_pipelines.db.schema import order_lines, products


def _products(conn: Connection, product_ids: Iterable[int]):
    return (
        select(products.c.id, products.c.sku, products.c.stock, products.c.reserved)
        .where(in_ids(conn, products.c.id, product_ids, "product_ids"))
        .order_by(products.c.id)
    )


def lock_products(conn: Connection, product_ids: Iterable[int]) -> list:
    """Lock and return (id, sku, stock, reserved) of the products, in id order."""
    return conn.execute(lock_rows(conn, _products(conn, product_ids))).all()


def read_products(conn: Connection, product_ids: Iterable[int]) -> list:
    """(id, sku, stock, reserved) of the products as committed now, without locks."""
    return conn.execute(_products(conn, product_ids)).all()


def still_available(conn: Connection, available: Mapping[int, int], taken: Mapping[int, int]) -> bool:
    """Lock the products `taken` and tell whether each still has at least the `available`
    quantity (stock − reserved) an allocation decided on without locks. Reservations are
    serialized, and what settles meanwhile only keeps or raises availability, so this holds
    unless stock itself was lowered (an inventory import); the caller then decides again."""
    return all(row.stock - row.reserved >= available[row.id] for row in lock_products(conn, taken))


def lock_products_of_orders(conn: Connection, order_ids: Iterable[int]) -> list:
    """Lock the products the orders' lines refer to (see lock_products)."""
    product_ids = conn.execute(
        select(order_lines.c.product_id).distinct().where(in_ids(conn, order_lines.c.order_id, order_ids))
    ).scalars()
    return lock_products(conn, product_ids)


def add_reserved(conn: Connection, quantities: Mapping[int, int], now: datetime | None = None) -> None:
    """reserved += quantity per product id (the caller has checked availability)."""
    if not quantities:
        return
    delta = rowset(conn, quantities.items(), [("product_id", BigInteger()), ("quantity", BigInteger())], "deltas")
    conn.execute(
        update(products)
        .where(products.c.id == delta.c.product_id)
        .values(reserved=products.c.reserved + delta.c.quantity, updated_at=now or utcnow())
    )


def _order_quantities(conn: Connection, order_ids: Iterable[int]):
    return (
        select(order_lines.c.product_id, func.sum(order_lines.c.quantity).label("quantity"))
        .where(in_ids(conn, order_lines.c.order_id, order_ids))
        .group_by(order_lines.c.product_id)
        .subquery("ordered")
    )


def commit_reserved(conn: Connection, order_ids: list[int], now: datetime | None = None) -> None:
    """The orders are paid: their reserved quantities leave stock (stock −= q, reserved −= q)."""
    if not order_ids:
        return
    ordered = _order_quantities(conn, order_ids)
    conn.execute(
        update(products)
        .where(products.c.id == ordered.c.product_id)
        .values(
            stock=products.c.stock - ordered.c.quantity,
            reserved=products.c.reserved - ordered.c.quantity,
            updated_at=now or utcnow(),
        )
    )


def release_reserved(conn: Connection, order_ids: list[int], now: datetime | None = None) -> None:
    """The orders will not be paid: their reserved quantities become available again."""
    if not order_ids:
        return
    ordered = _order_quantities(conn, order_ids)
    conn.execute(
        update(products)
        .where(products.c.id == ordered.c.product_id)
        .values(reserved=products.c.reserved - ordered.c.quantity, updated_at=now or utcnow())
    )
