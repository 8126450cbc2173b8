"""Helpers for the import tests: write files, import them, read back what the database holds."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from ordersys_pipelines.domain.imports.importer import ImportOptions, ImportResult, import_order_file

HEADER = "order_ref,order_date,customer_email,customer_name,sku,product_name,quantity,unit_price\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def run_import(engine: Engine, folder: Path, content: str | bytes, name: str = "orders.csv", **options) -> ImportResult:
    on_chunk = options.pop("on_chunk", None)
    return import_order_file(
        engine, write(folder, name, content), options=ImportOptions(**options), on_chunk=on_chunk
    )


def rows(engine: Engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rejects(engine: Engine) -> list[tuple[int, str]]:
    return rows(engine, "SELECT line_number, reason FROM import_rejects ORDER BY line_number")


def order_lines(engine: Engine, order_ref: str) -> list[tuple]:
    """(line_no, sku, quantity, unit_price_cents) of an order, in line order."""
    return rows(
        engine,
        "SELECT l.line_no, p.sku, l.quantity, l.unit_price_cents FROM order_lines l "
        "JOIN orders o ON o.id = l.order_id JOIN products p ON p.id = l.product_id "
        "WHERE o.order_ref = :ref ORDER BY l.line_no",
        ref=order_ref,
    )


def balanced(result: ImportResult) -> bool:
    return result.rows_read == result.lines_imported + result.rejected
