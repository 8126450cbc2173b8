"""Vectorized validation of a chunk: text → the typed rows of `import_staging`, or rejects.

Every check is a boolean mask over the whole chunk (pyarrow.compute); a rejected row's reason
joins the message of every check it failed. Amounts are exact decimals turned into cents from
their digits (never through float). Naive dates are read in ORDERSYS_TIMEZONE and stored as
naive UTC; dates with an offset (or Z) are converted from that offset.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ordersys_pipelines.domain.imports.csv_format import OrderLayout
from ordersys_pipelines.domain.imports.reader import RawChunk, Reject

MAX_QUANTITY = 1_000_000
MAX_AMOUNT_DIGITS = 9  # whole units: up to 999,999,999.99 per item
LIMITS = {"order_ref": 100, "customer_email": 320, "customer_ref": 100, "customer_name": 200, "sku": 100, "product_name": 300}

EMAIL = r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>.]+$"
AMOUNT = r"^(?P<units>\d*)(?:\.(?P<fraction>\d*))?$"
ISO_DATE = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?)?"
    r"\s*(?P<offset>Z|[+-]\d{2}:?\d{2})?$"
)

STAGING_SCHEMA = pa.schema(
    [
        ("line_number", pa.int64()),
        ("order_ref", pa.string()),
        ("order_date", pa.timestamp("s")),
        ("customer_email", pa.string()),
        ("customer_ref", pa.string()),
        ("customer_name", pa.string()),
        ("sku", pa.string()),
        ("product_name", pa.string()),
        ("quantity", pa.int64()),
        ("unit_price_cents", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ValidationOptions:
    timezone: str = "UTC"
    date_format: str | None = None  # strptime; ISO 8601 when None
    import_date: datetime | None = None  # the order date of files without one (naive UTC)


@dataclass
class ValidatedChunk:
    rows: pa.Table  # STAGING_SCHEMA
    rejects: list[Reject]


class Lazy:
    """A message built only for the rows that end up rejected (most rows never need one)."""

    def __init__(self, build):
        self.build = build

    def take(self, indices: pa.Array) -> pa.Array:
        return self.build(indices)


def said(name: str, column: pa.Array, text: str) -> Lazy:
    """"<name> 'value' <text>", the value cut short so a huge field does not make a huge reason."""
    return Lazy(
        lambda rows: pc.binary_join_element_wise(
            f"{name} '", pc.utf8_slice_codeunits(column.take(rows), 0, 60), f"' {text}", ""
        )
    )


class Problems:
    """Per-row problem messages, collected check by check."""

    def __init__(self, n: int):
        self.n = n
        self.checks: list[tuple[pa.Array, pa.Array | Lazy | str]] = []
        self.any = np.zeros(n, dtype=bool)

    def add(self, mask, message) -> None:
        mask = pc.fill_null(mask, True) if isinstance(mask, pa.Array | pa.ChunkedArray) else pa.array(mask)
        as_numpy = mask.to_numpy(zero_copy_only=False)
        if not as_numpy.any():
            return
        self.any |= as_numpy
        self.checks.append((mask, message))

    def reasons(self, rows: np.ndarray) -> list[str]:
        if len(rows) == 0 or not self.checks:
            return [""] * len(rows)
        taken = pa.array(rows, pa.int64())
        parts = []
        for mask, message in self.checks:
            selected = mask.take(taken)
            text = message if isinstance(message, str) else message.take(taken)
            parts.append(pc.if_else(selected, text, pa.scalar(None, pa.string())))
        joined = pc.binary_join_element_wise(*parts, "; ", null_handling="skip")
        return joined.to_pylist()


def per_distinct(column: pa.Array, compute):
    """Run `compute` once per distinct value and spread its result arrays back over the rows:
    a file repeats its prices, quantities, dates and e-mails far more often than not."""
    distinct = pc.unique(column)
    index = pc.index_in(column, distinct)
    results = compute(distinct)
    if isinstance(results, tuple):
        return tuple(pc.take(r, index) for r in results)
    return pc.take(results, index)


def _text(chunk: RawChunk, layout: OrderLayout, name: str) -> pa.Array | None:
    if not layout.has(name):
        return None
    return pc.utf8_trim_whitespace(chunk.columns[layout.positions[name]])


def parse_cents(column: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Exact decimal text → (cents, is_not_an_amount, has_more_than_two_decimals)."""
    parts = pc.extract_regex(column, AMOUNT)
    units = pc.fill_null(parts.field("units"), "")
    fraction = pc.fill_null(parts.field("fraction"), "")
    matched = pc.and_(
        parts.is_valid(),
        pc.or_(pc.greater(pc.utf8_length(units), 0), pc.greater(pc.utf8_length(fraction), 0)),
    )
    too_big = pc.greater(pc.utf8_length(pc.utf8_ltrim(units, "0")), MAX_AMOUNT_DIGITS)
    bad = pc.or_(pc.invert(matched), too_big)
    # Digits beyond the second decimal are allowed only when they are zeros ("1.50" = "1.500").
    extra_precision = pc.and_(matched, pc.invert(pc.match_substring_regex(fraction, r"^\d{0,2}0*$")))
    usable = pc.and_(pc.invert(bad), pc.invert(extra_precision))
    units = pc.if_else(usable, pc.if_else(pc.equal(units, ""), "0", units), "0")
    fraction = pc.if_else(usable, pc.utf8_rpad(pc.utf8_slice_codeunits(fraction, 0, 2), 2, "0"), "00")
    cents = pc.add(pc.multiply(pc.cast(units, pa.int64()), 100), pc.cast(fraction, pa.int64()))
    return cents, bad, extra_precision


def amount_checks(problems: Problems, column: pa.Array, name: str) -> tuple[pa.Array, pa.Array]:
    """Cents, and where the amount is usable."""
    cents, bad, extra_precision = per_distinct(column, parse_cents)
    negative = pc.starts_with(column, "-")
    problems.add(pc.and_(bad, negative), said(name, column, "is negative"))
    problems.add(
        pc.and_(bad, pc.invert(negative)), said(name, column, "is not an amount (digits with an optional . and cents)")
    )
    problems.add(extra_precision, said(name, column, "has more than 2 decimals"))
    return cents, pc.and_(pc.invert(bad), pc.invert(extra_precision))


def parse_quantity(column: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    """Text → (quantity, is_whole_number, is_positive, is_within_maximum)."""
    whole = pc.match_substring_regex(column, r"^[+-]?\d+$")
    negative = pc.and_(whole, pc.starts_with(column, "-"))
    magnitude = pc.utf8_ltrim(pc.utf8_ltrim(column, "+-"), "0")
    huge = pc.and_(whole, pc.greater(pc.utf8_length(magnitude), 7))
    safe = pc.and_(whole, pc.invert(huge))
    value = pc.cast(pc.if_else(safe, column, "0"), pa.int64())
    positive = pc.or_(pc.and_(huge, pc.invert(negative)), pc.greater(value, 0))
    within = pc.and_(pc.invert(huge), pc.less_equal(value, MAX_QUANTITY))
    return value, whole, positive, pc.or_(negative, within)


def _quantity(problems: Problems, column: pa.Array, name: str) -> tuple[pa.Array, pa.Array]:
    """The quantity, and where it is usable."""
    value, whole, positive, within = per_distinct(column, parse_quantity)
    problems.add(pc.invert(whole), said(name, column, "is not a whole number"))
    problems.add(pc.and_(whole, pc.invert(positive)), said(name, column, "is not positive"))
    problems.add(pc.and_(whole, pc.invert(within)), said(name, column, f"exceeds the maximum of {MAX_QUANTITY}"))
    return value, pc.and_(pc.and_(whole, positive), within)


def _strptime_checked(column: pa.Array, fmt: str) -> pa.Array:
    """strptime that also refuses what it would silently roll over (Feb 30 → Mar 1): the parsed
    value written back with the same format must give the same numbers as the input (strftime is
    slow: callers pass distinct values)."""
    parsed = pc.strptime(column, format=fmt, unit="s", error_is_null=True)
    if parsed.type.tz is not None:
        # With an offset the written-back UTC time differs from the text: check the wall time.
        wall_fmt = fmt.replace("%z", "").rstrip()
        wall = _strptime_checked(pc.replace_substring_regex(column, r"\s*(Z|[+-]\d{2}:?\d{2})$", ""), wall_fmt)
        checked = pc.if_else(pc.is_valid(wall), parsed, pa.scalar(None, parsed.type))
    else:

        def norm(values):
            return pc.replace_substring_regex(pc.utf8_lower(values), r"(^|\D)0+(\d)", r"\1\2")

        same = pc.equal(norm(pc.strftime(parsed, format=fmt)), norm(column))
        checked = pc.if_else(pc.fill_null(same, False), parsed, pa.scalar(None, parsed.type))
    return checked


def parse_dates(column: pa.Array, options: ValidationOptions) -> pa.Array:
    """Text → naive UTC timestamps (null where the text is not a date)."""
    return per_distinct(column, lambda distinct: _parse_distinct_dates(distinct, options))


def _parse_distinct_dates(column: pa.Array, options: ValidationOptions) -> pa.Array:
    if options.date_format:
        parsed = _strptime_checked(column, options.date_format)
        if parsed.type.tz is not None:
            return parsed.cast(pa.timestamp("s"))
        return _local_to_utc(parsed, options.timezone)
    # ISO 8601: date, optional time (T or space, seconds and fraction optional), optional Z/offset.
    parts = pc.extract_regex(column, ISO_DATE)
    day = pc.fill_null(parts.field("date"), "")
    clock = pc.fill_null(parts.field("time"), "")
    clock = pc.if_else(pc.equal(pc.utf8_length(clock), 5), pc.binary_join_element_wise(clock, ":00", ""), clock)
    clock = pc.if_else(pc.equal(clock, ""), "00:00:00", clock)
    local_text = pc.binary_join_element_wise(day, clock, " ")
    parsed = pc.strptime(local_text, format="%Y-%m-%d %H:%M:%S", unit="s", error_is_null=True)
    # Written back, a real date gives its own text; Feb 30 would come back as Mar 1.
    local = pc.if_else(pc.fill_null(pc.equal(pc.cast(parsed, pa.string()), local_text), False), parsed, None)
    offset_text = pc.replace_substring(pc.fill_null(parts.field("offset"), ""), ":", "")
    offset_text = pc.if_else(pc.equal(offset_text, "Z"), "+0000", offset_text)
    has_offset = pc.greater(pc.utf8_length(offset_text), 0)
    sign = pc.if_else(pc.starts_with(offset_text, "-"), -1, 1)
    hours = pc.cast(pc.if_else(has_offset, pc.utf8_slice_codeunits(offset_text, 1, 3), "0"), pa.int64())
    minutes = pc.cast(pc.if_else(has_offset, pc.utf8_slice_codeunits(offset_text, 3, 5), "0"), pa.int64())
    offset_seconds = pc.multiply(sign, pc.add(pc.multiply(hours, 3600), pc.multiply(minutes, 60)))
    absolute = pc.subtract(local, pc.cast(offset_seconds, pa.duration("s")))
    return pc.if_else(has_offset, absolute, _local_to_utc(local, options.timezone))


def _local_to_utc(naive: pa.Array, timezone: str) -> pa.Array:
    if timezone == "UTC":
        return naive
    zoned = pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="latest")
    return zoned.cast(pa.timestamp("s"))


def _hash_map(keys: pa.Array, derive) -> pa.Array:
    """Apply `derive` once per distinct key (a chunk has far fewer products and orders than rows)."""
    distinct = pc.unique(keys)
    derived = pa.array([derive(k) if k is not None else None for k in distinct.to_pylist()], pa.string())
    return pc.take(derived, pc.index_in(keys, distinct))


def derive_sku(name: str) -> str:
    """A stable sku for a product name: readable slug + short hash of the normalised name."""
    normalised = " ".join(name.split()).casefold()
    slug = re.sub(r"[^a-z0-9]+", "-", normalised).strip("-")[:40] or "item"
    return f"{slug}-{hashlib.sha1(normalised.encode()).hexdigest()[:8]}"


def derive_order_ref(key: str) -> str:
    """Files without order_ref: one order per customer and order date, as the old system grouped."""
    return "G-" + hashlib.sha1(key.encode()).hexdigest()[:16]


def validate_chunk(chunk: RawChunk, layout: OrderLayout, options: ValidationOptions) -> ValidatedChunk:
    n = chunk.num_rows
    problems = Problems(n)
    name = layout.source_name

    if any(chunk.utf8_errors):
        problems.add(
            pa.array([e is not None for e in chunk.utf8_errors]),
            pa.array([e or "" for e in chunk.utf8_errors], pa.string()),
        )

    def required_text(column: str, text: pa.Array) -> None:
        problems.add(pc.equal(pc.utf8_length(text), 0), f"{name(column)} is empty")
        problems.add(
            pc.greater(pc.utf8_length(text), LIMITS[column]),
            f"{name(column)} is longer than {LIMITS[column]} characters",
        )

    # Customer: by e-mail, else by the shop's customer id.
    email = _text(chunk, layout, "customer_email")
    customer_ref = None
    if email is not None:
        email = pc.utf8_lower(email)
        required_text("customer_email", email)
        looks_right = per_distinct(email, lambda distinct: pc.match_substring_regex(distinct, EMAIL))
        problems.add(
            pc.and_(pc.greater(pc.utf8_length(email), 0), pc.invert(looks_right)),
            said(name("customer_email"), email, "is not an e-mail address"),
        )
        customer_key = email
    else:
        customer_ref = _text(chunk, layout, "customer_ref")
        required_text("customer_ref", customer_ref)
        customer_key = customer_ref
    customer_name = _text(chunk, layout, "customer_name")
    if customer_name is None:
        customer_name = pa.array([""] * n, pa.string())
    problems.add(
        pc.greater(pc.utf8_length(customer_name), LIMITS["customer_name"]),
        f"{name('customer_name')} is longer than {LIMITS['customer_name']} characters",
    )

    # Product: sku as given, or derived from the product name.
    product_name = _text(chunk, layout, "product_name")
    sku = _text(chunk, layout, "sku")
    if sku is not None:
        required_text("sku", sku)
        if product_name is None:
            product_name = sku
        else:
            product_name = pc.if_else(pc.equal(pc.utf8_length(product_name), 0), sku, product_name)
    else:
        required_text("product_name", product_name)
        sku = _hash_map(product_name, derive_sku)
    problems.add(
        pc.greater(pc.utf8_length(product_name), LIMITS["product_name"]),
        f"{name('product_name')} is longer than {LIMITS['product_name']} characters",
    )

    quantity, quantity_ok = _quantity(problems, _text(chunk, layout, "quantity"), name("quantity"))
    unit_price, price_ok = amount_checks(problems, _text(chunk, layout, "unit_price"), name("unit_price"))
    total_text = _text(chunk, layout, "total_amount")
    if total_text is not None:
        # An empty total is allowed; a given one must agree with quantity × unit_price.
        has_total = pc.greater(pc.utf8_length(total_text), 0)
        total, total_ok = amount_checks(problems, pc.if_else(has_total, total_text, "0"), name("total_amount"))
        line_total = pc.multiply(quantity, unit_price)
        comparable = pc.and_(pc.and_(has_total, total_ok), pc.and_(quantity_ok, price_ok))
        problems.add(
            pc.and_(comparable, pc.not_equal(total, line_total)),
            Lazy(lambda rows: pc.binary_join_element_wise(
                said(name("total_amount"), total_text, "is not quantity × unit_price = ").take(rows),
                format_cents(line_total.take(rows)), "",
            )),
        )

    # Order date: parsed, or the import date for files without one.
    date_text = _text(chunk, layout, "order_date")
    if date_text is not None:
        order_date = parse_dates(date_text, options)
        expected = f"format {options.date_format}" if options.date_format else "YYYY-MM-DD[ HH:MM[:SS]]"
        problems.add(pc.is_null(order_date), said(name("order_date"), date_text, f"is not a date ({expected})"))
        order_date = pc.fill_null(order_date, pa.scalar(0, pa.timestamp("s")))
    else:
        stamp = (options.import_date or datetime(1970, 1, 1)).replace(microsecond=0)
        order_date = pa.array([stamp] * n, pa.timestamp("s"))

    order_ref = _text(chunk, layout, "order_ref")
    if order_ref is not None:
        required_text("order_ref", order_ref)
    else:
        group_key = pc.binary_join_element_wise(
            pc.fill_null(customer_key, ""), pc.strftime(order_date, format="%Y-%m-%dT%H:%M:%S"), "|"
        )
        order_ref = _hash_map(group_key, derive_order_ref)

    bad = problems.any
    rejects = list(chunk.malformed)
    if bad.any():
        rows = np.flatnonzero(bad)
        texts = chunk.raw_text(rows)
        reasons = problems.reasons(rows)
        lines = chunk.line_numbers[rows]
        rejects.extend(
            Reject(line_number=int(line), raw_text=text, reason=reason)
            for line, text, reason in zip(lines, texts, reasons, strict=True)
        )
        rejects.sort(key=lambda r: r.line_number)

    good = pa.array(~bad)
    null_text = pa.nulls(n, pa.string())
    table = pa.table(
        {
            "line_number": pa.array(chunk.line_numbers, pa.int64()),
            "order_ref": order_ref,
            "order_date": order_date,
            "customer_email": email if email is not None else null_text,
            "customer_ref": customer_ref if customer_ref is not None else null_text,
            "customer_name": customer_name,
            "sku": sku,
            "product_name": product_name,
            "quantity": quantity,
            "unit_price_cents": unit_price,
        },
        schema=STAGING_SCHEMA,
    ).filter(good)
    return ValidatedChunk(rows=table, rejects=rejects)


def format_cents(cents: pa.Array) -> pa.Array:
    """Integer cents → '12.34' text, vectorized."""
    units = pc.cast(pc.divide(cents, 100), pa.string())
    rest = pc.utf8_lpad(pc.cast(pc.subtract(cents, pc.multiply(pc.divide(cents, 100), 100)), pa.string()), 2, "0")
    return pc.binary_join_element_wise(units, rest, ".")
