"""Read models for operators: one order with its lines and audit trail.

An operator looks at an order precisely when something is wrong with it, so a stored value
out of range (a timestamp past 9999, a zero date, text in a number column) must not hide the
order: the rows are read through domain.isolation, and a row that cannot be read with its
types is read again with every value as the text the database holds (shown as such).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Column, ColumnElement, Connection, Integer, Label, Row, String, cast, func, select

from ordersys_pipelines.db.schema import customers, import_files, order_events, order_lines, orders, products
from ordersys_pipelines.domain.isolation import in_savepoint, isolate


@dataclass(frozen=True)
class OrderLine:
    line_no: int
    sku: str
    name: str
    quantity: int | str
    unit_price_cents: int | str

    @property
    def amount_cents(self) -> int | None:
        """Computed here, not in SQL: a product past BIGINT is an error there, a number here."""
        if isinstance(self.quantity, int) and isinstance(self.unit_price_cents, int):
            return self.quantity * self.unit_price_cents
        return None


@dataclass(frozen=True)
class OrderDetails:
    order: Row
    lines: list[OrderLine]
    events: list[Row]


def _as_text(column: ColumnElement) -> ColumnElement:
    if isinstance(column.type, Integer) and getattr(column, "primary_key", False):
        return column  # keys are always readable, and the other queries compare with them
    element = column.element if isinstance(column, Label) else column
    return cast(element, String).label(column.key if isinstance(column, Column) else column.name)


def _read(conn: Connection, columns: Sequence[ColumnElement], key: Column, ids: list[int], joins=None) -> list[Row]:
    """The rows whose `key` is in `ids`, typed; a row that cannot be read so, as text."""

    def query(selected):
        statement = select(*selected)
        return joins(statement) if joins else statement

    def typed(c: Connection, some: list[int]) -> list[Row]:
        return c.execute(query(columns).where(key.in_(some))).all()

    batch = isolate(ids, in_savepoint(conn, typed), stage="orders show")
    rows = [row for part in batch.results for row in part]
    if batch.failed:
        rows += conn.execute(query([_as_text(c) for c in columns]).where(key.in_(list(batch.failed)))).all()
    position = {i: n for n, i in enumerate(ids)}
    return sorted(rows, key=lambda row: position[row.id])


def order_details(conn: Connection, order_ref: str) -> OrderDetails | None:
    order_id = conn.execute(select(orders.c.id).where(orders.c.order_ref == order_ref)).scalar()
    if order_id is None:
        return None
    [order] = _read(
        conn,
        [*orders.c, func.coalesce(customers.c.email, customers.c.customer_ref).label("customer"),
         customers.c.name.label("customer_name"), import_files.c.original_name.label("import_file")],
        orders.c.id, [order_id],
        joins=lambda s: s.join(customers, customers.c.id == orders.c.customer_id)
        .outerjoin(import_files, import_files.c.id == orders.c.import_file_id),
    )
    line_ids = list(conn.execute(
        select(order_lines.c.id).where(order_lines.c.order_id == order_id).order_by(order_lines.c.line_no)
    ).scalars())
    lines = _read(
        conn,
        [order_lines.c.id, order_lines.c.line_no, products.c.sku, products.c.name, order_lines.c.quantity,
         order_lines.c.unit_price_cents],
        order_lines.c.id, line_ids, joins=lambda s: s.join(products, products.c.id == order_lines.c.product_id),
    )
    event_ids = list(conn.execute(
        select(order_events.c.id).where(order_events.c.order_id == order_id).order_by(order_events.c.id)
    ).scalars())
    events = _read(
        conn,
        [order_events.c.id, order_events.c.created_at, order_events.c.from_status, order_events.c.to_status,
         order_events.c.reason, order_events.c.run_id],
        order_events.c.id, event_ids,
    )
    return OrderDetails(
        order,
        [OrderLine(row.line_no, row.sku, row.name, row.quantity, row.unit_price_cents) for row in lines],
        events,
    )
