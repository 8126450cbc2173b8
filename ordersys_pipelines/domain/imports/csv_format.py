"""The order CSV format: which columns a file has and which canonical field each one feeds.

Canonical header: order_ref,order_date,customer_email,customer_name,sku,product_name,quantity,unit_price.
Header names are case- and whitespace-insensitive ("Order Ref" = "order_ref"); the exports of the
system this replaces use a few other names (ALIASES); `--columns "Src=canonical,..."` maps any
other export. Optional columns are derived when absent (see validate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CANONICAL_COLUMNS = (
    "order_ref",
    "order_date",
    "customer_email",
    "customer_name",
    "sku",
    "product_name",
    "quantity",
    "unit_price",
)
# Columns a file may also carry: a shop's customer id instead of e-mail, and a line total that
# must agree with quantity × unit_price.
EXTRA_COLUMNS = ("customer_ref", "total_amount")
KNOWN_COLUMNS = CANONICAL_COLUMNS + EXTRA_COLUMNS

ALIASES = {
    "order_id": "order_ref",
    "price_per_item": "unit_price",
    "product_price": "unit_price",
}

INVENTORY_COLUMNS = ("sku", "name", "price", "stock")
INVENTORY_ALIASES = {"product_name": "name", "unit_price": "price", "price_per_item": "price"}


class CsvFormatError(ValueError):
    """The file as a whole cannot be read as an order (or inventory) file."""


def normalise_name(name: str) -> str:
    """'  Order ID ' → 'order_id': header names compare case- and whitespace-insensitively."""
    return re.sub(r"[\s\-]+", "_", name.replace("\ufeff", "").strip().lower())


def parse_column_mapping(text: str | dict[str, str] | None) -> dict[str, str]:
    """'Order ID=order_ref, Email=customer_email' → {'order_id': 'order_ref', 'email': ...}."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, dict) else _split_pairs(text)
    mapping: dict[str, str] = {}
    for source, target in pairs:
        canonical = normalise_name(target)
        if canonical not in KNOWN_COLUMNS:
            raise CsvFormatError(
                f"column mapping {source}={target}: {target!r} is not a known column "
                f"(known: {', '.join(KNOWN_COLUMNS)})"
            )
        mapping[normalise_name(source)] = canonical
    return mapping


def _split_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.rpartition("=")
        if not sep or not source.strip() or not target.strip():
            raise CsvFormatError(f"column mapping {item!r} is not of the form 'Source column=canonical_name'")
        pairs.append((source, target))
    return pairs


@dataclass(frozen=True)
class OrderLayout:
    """Where each canonical field sits in a file's header."""

    header: tuple[str, ...]
    positions: dict[str, int]  # canonical name → column index
    ignored: tuple[str, ...] = field(default=())

    def has(self, column: str) -> bool:
        return column in self.positions

    def source_name(self, column: str) -> str:
        """The file's own name for a canonical column (what an operator recognises)."""
        position = self.positions.get(column)
        return self.header[position].strip() if position is not None else column

    @property
    def customer_key(self) -> str:
        """Customers are keyed by e-mail when the file has it, else by the shop's customer id."""
        return "customer_email" if self.has("customer_email") else "customer_ref"


def _canonical_positions(
    header: list[str], known: tuple[str, ...], aliases: dict[str, str], mapping: dict[str, str]
) -> tuple[dict[str, int], list[str]]:
    positions: dict[str, int] = {}
    ignored: list[str] = []
    for index, raw in enumerate(header):
        name = normalise_name(raw)
        canonical = mapping.get(name) or (name if name in known else aliases.get(name))
        if canonical is None:
            ignored.append(raw.strip())
            continue
        if canonical in positions:
            first = header[positions[canonical]].strip()
            raise CsvFormatError(f"columns {first!r} and {raw.strip()!r} both give {canonical}")
        positions[canonical] = index
    return positions, ignored


def resolve_order_layout(header: list[str], mapping: dict[str, str] | None = None) -> OrderLayout:
    """The layout of an order file, or CsvFormatError listing every missing column and what was found."""
    positions, ignored = _canonical_positions(header, KNOWN_COLUMNS, ALIASES, mapping or {})
    missing = []
    for need, alternatives in (
        ("quantity", ()),
        ("unit_price", ("price_per_item", "product_price")),
        ("customer_email", ("customer_ref",)),
        ("sku", ("product_name",)),
    ):
        if need not in positions and not any(alt in positions for alt in alternatives if alt in KNOWN_COLUMNS):
            missing.append(f"{need} (or {' / '.join(alternatives)})" if alternatives else need)
    if missing:
        found = ", ".join(h.strip() for h in header) or "nothing"
        raise CsvFormatError(f"missing required column(s): {'; '.join(missing)}. Found: {found}")
    return OrderLayout(header=tuple(header), positions=positions, ignored=tuple(ignored))


def resolve_inventory_layout(header: list[str]) -> OrderLayout:
    positions, ignored = _canonical_positions(header, INVENTORY_COLUMNS, INVENTORY_ALIASES, {})
    missing = [name for name in ("sku", "stock") if name not in positions]
    if missing:
        found = ", ".join(h.strip() for h in header) or "nothing"
        raise CsvFormatError(f"missing required column(s): {', '.join(missing)}. Found: {found}")
    return OrderLayout(header=tuple(header), positions=positions, ignored=tuple(ignored))


def detect_kind(header: list[str]) -> str:
    """'inventory' for a catalog file (sku and stock, no quantity), else 'orders'."""
    names = {normalise_name(h) for h in header}
    if {"sku", "stock"} <= names and "quantity" not in names:
        return "inventory"
    return "orders"
