"""Realistic order files (and the matching catalog) for demos, tests and benchmarks.

Seeded and vectorized (numpy + pyarrow, written block by block), so a million lines take seconds
and little memory. Orders have several lines, customers come back (a Zipf-like pick from a pool),
~2000 products with skewed popularity, dates spread over a year, and K deliberately bad rows of
varied kinds, each of which the import must reject exactly once.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ordersys_pipelines.domain.imports.csv_format import CANONICAL_COLUMNS
from ordersys_pipelines.domain.imports.validate import format_cents

CATALOG_SEED = 20240601  # the catalog does not depend on an order file's seed: every file matches it
BLOCK_LINES = 100_000

ADJECTIVES = ["Classic", "Compact", "Deluxe", "Eco", "Ergonomic", "Heavy-duty", "Mini", "Modern", "Premium",
              "Rustic", "Smart", "Solid", "Travel", "Vintage", "Wireless", "Waterproof", "Large", "Slim"]
NOUNS = ["Mug", "Kettle", "Backpack", "Lamp", "Desk", "Chair", "Notebook", "Headphones", "Blender", "Jacket",
         "Umbrella", "Bottle", "Keyboard", "Monitor", "Teapot", "Candle", "Blanket", "Speaker", "Pan", "Towel"]
FIRST = ["Anna", "Ben", "Chloé", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kim", "Lena",
         "Marco", "Nina", "Oscar", "Paula", "Quinn", "Rosa", "Sam", "Tara", "Uwe", "Vera", "Will", "Zoë"]
LAST = ["Adams", "Becker", "Costa", "Dubois", "Evans", "Fischer", "García", "Hansen", "Ivanov", "Jensen",
        "Kowalski", "Lopez", "Müller", "Novak", "O'Brien", "Petrov", "Rossi", "Schmidt", "Tanaka", "Weber"]
DOMAINS = ["example.com", "mail.test", "shop.example", "post.example.org"]

# (column, bad value): one problem each, so each bad row is exactly one reject.
BAD_KINDS = [
    ("quantity", "0"),
    ("quantity", "-2"),
    ("quantity", "three"),
    ("quantity", "99999999"),
    ("unit_price", "12,50"),
    ("unit_price", "-3.00"),
    ("unit_price", "1.999"),
    ("customer_email", "not-an-email"),
    ("customer_email", ""),
    ("order_date", "2025-13-45"),
    ("sku", ""),
]


@dataclass(frozen=True)
class Catalog:
    skus: list[str]
    names: list[str]
    price_cents: np.ndarray


@dataclass(frozen=True)
class GeneratedFile:
    path: Path
    rows: int
    orders: int
    bad_rows: int
    customers: int


def catalog(products: int = 2000) -> Catalog:
    rng = np.random.default_rng(CATALOG_SEED)
    skus, names = [], []
    for i in range(products):
        adjective = ADJECTIVES[i % len(ADJECTIVES)]
        noun = NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]
        name = f"{adjective} {noun} {100 + i // (len(ADJECTIVES) * len(NOUNS))}"
        if i % 97 == 5:
            name = f"{noun}, {adjective.lower()} edition"  # a comma: quoted in the file
        elif i % 89 == 7:
            name = f'{adjective} {noun} 27" model'  # a quote: doubled in the file
        skus.append(f"SKU-{i + 1:05d}")
        names.append(name)
    prices = np.round(np.exp(rng.normal(3.0, 1.0, products)) * 100).astype(np.int64).clip(99, 250_000)
    return Catalog(skus=skus, names=names, price_cents=prices)


def write_catalog(out: Path, *, products: int = 2000, stock: int = 1000) -> int:
    """A `sku,name,price,stock` file for `ordersys catalog load`."""
    cat = catalog(products)
    table = pa.table(
        {
            "sku": pa.array(cat.skus),
            "name": pa.array(cat.names),
            "price": format_cents(pa.array(cat.price_cents)),
            "stock": pa.array([str(stock)] * products),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pa_csv.write_csv(table, out)
    return products


def _customers(rng: np.random.Generator, count: int) -> tuple[pa.Array, pa.Array]:
    first = rng.integers(0, len(FIRST), count)
    last = rng.integers(0, len(LAST), count)
    domain = rng.integers(0, len(DOMAINS), count)
    names = [f"{FIRST[f]} {LAST[n]}" for f, n in zip(first, last, strict=True)]
    emails = [
        f"{_ascii(FIRST[f])}.{_ascii(LAST[n])}{i}@{DOMAINS[d]}"
        for i, (f, n, d) in enumerate(zip(first, last, domain, strict=True))
    ]
    return pa.array(emails), pa.array(names)


def _ascii(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace("'", "")


def generate_orders(
    out: Path,
    *,
    rows: int,
    seed: int = 1,
    bad_rows: int = 0,
    products: int = 2000,
    start: date | None = None,
    days: int = 365,
) -> GeneratedFile:
    """Write `rows` order lines (header + rows lines) to `out`."""
    if rows < 0 or bad_rows < 0 or bad_rows > rows:
        raise ValueError("rows and bad_rows must be non-negative and bad_rows <= rows")
    rng = np.random.default_rng(seed)
    cat = catalog(products)
    # Text columns are CSV-quoted once here (names may hold commas and quotes), not per line.
    skus, names, prices = pa.array(cat.skus), _csv_field(pa.array(cat.names)), pa.array(cat.price_cents)
    customer_count = max(20, rows // 8)
    emails, customer_names = _customers(rng, customer_count)
    customer_names = _csv_field(customer_names)
    start = start or (date.today() - timedelta(days=days))
    start_s = int(datetime(start.year, start.month, start.day).timestamp())  # naive: seconds since epoch
    span_s = days * 86_400
    popularity = 1.0 / np.arange(1, products + 1) ** 0.8
    popularity /= popularity.sum()
    bad_at = np.sort(rng.choice(rows, size=bad_rows, replace=False)) if bad_rows else np.array([], dtype=np.int64)

    out.parent.mkdir(parents=True, exist_ok=True)
    written = orders = numbered = 0
    with open(out, "wb") as handle:
        handle.write((",".join(CANONICAL_COLUMNS) + "\n").encode())
        while written < rows:
            block = min(BLOCK_LINES, rows - written)
            # Orders of 1–6 lines; the last one is cut at the block end (its lines stay adjacent).
            sizes = rng.integers(1, 7, block)
            order_of_line = np.repeat(np.arange(len(sizes)), sizes)[:block]
            n_orders = int(order_of_line[-1]) + 1
            order_numbers = numbered + np.arange(n_orders)
            # Chronological, like a real export: each block covers its share of the year.
            order_times = np.sort(
                start_s + (written + rng.random(n_orders) * block) / max(rows, 1) * span_s
            ).astype(np.int64)
            customer = (rng.zipf(1.3, n_orders) - 1 + rng.integers(0, customer_count, n_orders) * (rng.random(n_orders) < 0.5)) % customer_count
            product = rng.choice(products, size=block, p=popularity)
            quantity = np.minimum(rng.geometric(0.55, block), 20)

            line_order = pa.array(order_numbers[order_of_line])
            columns = {
                "order_ref": pc.binary_join_element_wise(
                    f"ORD-{seed}-", pc.utf8_lpad(pc.cast(line_order, pa.string()), 8, "0"), ""
                ),
                "order_date": pc.cast(pa.array(order_times[order_of_line].astype("datetime64[s]")), pa.string()),
                "customer_email": emails.take(pa.array(customer[order_of_line])),
                "customer_name": customer_names.take(pa.array(customer[order_of_line])),
                "sku": skus.take(pa.array(product)),
                "product_name": names.take(pa.array(product)),
                "quantity": pc.cast(pa.array(quantity), pa.string()),
                "unit_price": format_cents(prices.take(pa.array(product))),
            }
            in_block = bad_at[(bad_at >= written) & (bad_at < written + block)] - written
            if len(in_block):
                # A bad line rejects its whole order: each stands in an order of its own, so each
                # is exactly one reject.
                mask = np.zeros(block, dtype=bool)
                mask[in_block] = True
                own_refs = pa.array([f"ORD-{seed}-BAD-{written + int(row)}" for row in in_block], pa.string())
                columns["order_ref"] = pc.replace_with_mask(columns["order_ref"], pa.array(mask), own_refs)
                columns = _spoil(columns, in_block, first_kind=int(np.searchsorted(bad_at, written)))
            handle.write(_csv_lines([columns[name] for name in CANONICAL_COLUMNS]))
            written += block
            numbered += n_orders
            orders += len(pc.unique(columns["order_ref"]))
    return GeneratedFile(path=out, rows=rows, orders=orders, bad_rows=bad_rows, customers=customer_count)


def _spoil(columns: dict[str, pa.Array], rows: np.ndarray, *, first_kind: int) -> dict[str, pa.Array]:
    """Give each of `rows` one problem, cycling through BAD_KINDS."""
    by_column: dict[str, list[tuple[int, str]]] = {}
    for offset, row in enumerate(rows):
        column, value = BAD_KINDS[(first_kind + offset) % len(BAD_KINDS)]
        by_column.setdefault(column, []).append((int(row), value))
    spoiled = dict(columns)
    for column, patches in by_column.items():
        mask = np.zeros(len(columns[column]), dtype=bool)
        mask[[row for row, _ in patches]] = True
        values = _csv_field(pa.array([value for _, value in sorted(patches)], pa.string()))
        spoiled[column] = pc.replace_with_mask(columns[column], pa.array(mask), values)
    return spoiled


def _csv_field(values: pa.Array) -> pa.Array:
    """Quote a text column where CSV needs it (commas, quotes, newlines), as shops' exports do."""
    needs = pc.match_substring_regex(values, r'[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def _csv_lines(columns: list[pa.Array]) -> bytes:
    """The rows as CSV text (fields already quoted where needed), each line ended by a newline."""
    lines = pc.binary_join_element_wise(*columns, ",")
    lines = pc.binary_join_element_wise(lines, "", "\n")
    offsets = lines.buffers()[1]
    start, end = (int(v) for v in np.frombuffer(offsets, dtype=np.int32)[[lines.offset, lines.offset + len(lines)]])
    return lines.buffers()[2].to_pybytes()[start:end]
