"""Catalog (inventory) files: `sku,name,price,stock` upserts products and sets their stock.

Stock is set, not added: the file says how many items the shop holds. It is never set below
what is already reserved for orders in flight (the row is reported instead), so
`reserved <= stock` keeps holding. A file is known by its content hash like an order file
(`import_files.kind = 'inventory'`), so dropping the same file twice changes nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, delete, select, update

from ordersys_pipelines.db.dialect import insert_new, lock_rows, upsert
from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import import_files, import_rejects, products
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError, resolve_inventory_layout
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.domain.imports.load import copy_rows, rejects_table
from ordersys_pipelines.domain.imports.reader import CONTROL_CHARACTERS, CsvChunkReader, RawChunk, Reject
from ordersys_pipelines.domain.imports.validate import LIMITS, Problems, amount_checks, control_character

MAX_STOCK = 10**12
BATCH = 1000


@dataclass
class CatalogResult:
    file_id: int
    content_hash: str
    name: str
    already_loaded: bool = False
    rows_read: int = 0
    products_created: int = 0
    products_updated: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejects: list[Reject] = field(default_factory=list)  # the first ones


def load_catalog(
    engine: Engine, path: Path, *, chunk_rows: int = 50_000, encoding: str = "utf-8", name: str | None = None
) -> CatalogResult:
    """Apply a catalog file in one transaction. Raises CsvFormatError when it has no sku/stock."""
    started = time.perf_counter()
    path = Path(path)
    name = name or path.name
    digest = content_hash(path)
    reader = CsvChunkReader(path, chunk_rows=chunk_rows, encoding=encoding)
    layout = resolve_inventory_layout(reader.header)
    result = CatalogResult(file_id=0, content_hash=digest, name=name)
    with engine.begin() as conn:
        conn.execute(
            insert_new(conn, import_files, [import_files.c.content_hash])
            .values(content_hash=digest, original_name=name, partition_key=partition_key(name, digest),
                    kind="inventory", started_at=utcnow(), run_id=uuid.uuid4().hex)
        )
        row = conn.execute(select(import_files).where(import_files.c.content_hash == digest)).one()
        if row.kind != "inventory":
            if row.status == "completed":
                raise CsvFormatError(f"this content was imported as an order file ({row.original_name})")
            conn.execute(update(import_files).where(import_files.c.id == row.id).values(kind="inventory"))
        result.file_id = row.id
        if row.status == "completed":
            result.already_loaded = True
            result.rows_read, result.rejected = row.rows_read, row.rejected_rows
            result.products_created = row.new_products
            result.products_updated = row.lines_imported
            return result
        conn.execute(delete(import_rejects).where(import_rejects.c.file_id == row.id))
        for chunk in reader.chunks():
            _apply_chunk(conn, row.id, chunk, layout, result)
        conn.execute(
            update(import_files)
            .where(import_files.c.id == row.id)
            .values(status="completed", rows_read=result.rows_read, rejected_rows=result.rejected,
                    new_products=result.products_created, lines_imported=result.products_updated,
                    chunks_committed=1, error=None, finished_at=utcnow())
        )
    result.seconds = time.perf_counter() - started
    return result


def _apply_chunk(conn: Connection, file_id: int, chunk: RawChunk, layout, result: CatalogResult) -> None:
    n = chunk.num_rows
    problems = Problems(n)
    if any(chunk.utf8_errors):
        problems.add(pa.array([e is not None for e in chunk.utf8_errors]),
                     pa.array([e or "" for e in chunk.utf8_errors], pa.string()))

    def text(column: str) -> pa.Array | None:
        return pc.utf8_trim_whitespace(chunk.columns[layout.positions[column]]) if layout.has(column) else None

    for column in ("sku", "name"):  # PostgreSQL cannot store a NUL, and none belongs in a name
        if layout.has(column):
            raw = chunk.columns[layout.positions[column]]
            problems.add(pc.match_substring_regex(raw, CONTROL_CHARACTERS), control_character(column, raw))
    sku = text("sku")
    problems.add(pc.equal(pc.utf8_length(sku), 0), "sku is empty")
    problems.add(pc.greater(pc.utf8_length(sku), LIMITS["sku"]), f"sku is longer than {LIMITS['sku']} characters")
    name = text("name")
    if name is not None:
        problems.add(pc.greater(pc.utf8_length(name), LIMITS["product_name"]),
                     f"name is longer than {LIMITS['product_name']} characters")
        name = pc.if_else(pc.equal(pc.utf8_length(name), 0), sku, name)
    price = None
    if layout.has("price"):
        price, _ = amount_checks(problems, text("price"), "price")
    stock_text = text("stock")
    whole = pc.match_substring_regex(stock_text, r"^\+?\d{1,13}$")
    problems.add(pc.invert(whole), pc.binary_join_element_wise("stock '", stock_text, "' is not a whole number of items", ""))
    stock = pc.cast(pc.if_else(whole, pc.utf8_ltrim(stock_text, "+"), "0"), pa.int64())
    problems.add(pc.greater(stock, MAX_STOCK), f"stock exceeds {MAX_STOCK}")

    rejects = list(chunk.malformed)
    bad = problems.any.copy()
    # A sku given twice: the last line counts, earlier ones are reported.
    skus = sku.to_pylist()
    last_line_of: dict[str, int] = {}
    for i, value in enumerate(skus):
        if not bad[i]:
            last_line_of[value] = i
    duplicate = np.array([not bad[i] and last_line_of[v] != i for i, v in enumerate(skus)], dtype=bool)
    rows = np.flatnonzero(bad)
    rejects += [Reject(int(line), raw, reason) for line, raw, reason in
                zip(chunk.line_numbers[rows], chunk.raw_text(rows), problems.reasons(rows), strict=True)]
    rows = np.flatnonzero(duplicate)
    rejects += [Reject(int(chunk.line_numbers[i]), raw, f"sku {skus[i]} appears again on line {chunk.line_numbers[last_line_of[skus[i]]]}; that line counts")
                for i, raw in zip(rows, chunk.raw_text(rows), strict=True)]

    good = np.flatnonzero(~bad & ~duplicate)
    records = []
    for i in good:
        record = {"sku": skus[i], "stock": int(stock[i].as_py())}
        if name is not None:
            record["name"] = name[i].as_py()
        if price is not None:
            record["price_cents"] = int(price[i].as_py())
        records.append((int(i), record))

    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        rejects += _upsert_products(conn, batch, result, chunk)
    result.rows_read += n + len(chunk.malformed)
    result.rejected += len(rejects)
    rejects.sort(key=lambda r: r.line_number)
    result.rejects = (result.rejects + rejects)[:10]
    copy_rows(conn, import_rejects, rejects_table(file_id, rejects))


def _upsert_products(conn: Connection, batch, result: CatalogResult, chunk: RawChunk) -> list[Reject]:
    """Create or update a batch of products; rows that would set stock below reserved are rejects."""
    skus = [record["sku"] for _, record in batch]
    query = select(products.c.sku, products.c.reserved).where(products.c.sku.in_(skus))
    query = lock_rows(conn, query)
    reserved = dict(conn.execute(query).all())
    rejects, rows = [], []
    now = utcnow()
    for row, record in batch:
        held = reserved.get(record["sku"])
        if held is not None and record["stock"] < held:
            rejects.append(Reject(int(chunk.line_numbers[row]), chunk.raw_text(np.array([row]))[0],
                                  f"stock {record['stock']} for {record['sku']} is below the {held} already reserved"))
            continue
        rows.append({"name": record["sku"], "price_cents": 0, **record, "created_at": now, "updated_at": now})
    if not rows:
        return rejects
    given = set(batch[0][1])  # the columns the file has
    changed = [column for column in ("name", "price_cents", "stock") if column in given] + ["updated_at"]
    conn.execute(upsert(conn, products, rows, [products.c.sku], changed))
    created = sum(1 for row in rows if row["sku"] not in reserved)
    result.products_created += created
    result.products_updated += len(rows) - created
    return rejects
