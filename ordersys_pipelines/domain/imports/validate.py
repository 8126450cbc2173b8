"""Vectorized validation of a chunk: text → the typed rows of `import_staging`, or rejects.

Every check is a boolean mask over the whole chunk (pyarrow.compute); a rejected row's reason
joins the message of every check it failed. Amounts are exact decimals turned into cents from
their digits (never through float; `domain.money` holds the grammar, shared with refunds).
Naive dates are read in ORDERSYS_TIMEZONE and stored as naive UTC; dates with an offset (or Z)
are converted from that offset, which must exist (±14:00 at most), and must land in the
supported range (FIRST_DATE to END_DATE, UTC). Control characters in a stored column reject
the row. A rejected row names its order_ref where it can be told, so the merge can reject the
rest of that order.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ordersys_pipelines.domain.imports.csv_format import OrderLayout
from ordersys_pipelines.domain.imports.reader import CONTROL_CHARACTER, CONTROL_CHARACTERS, RawChunk, Reject
from ordersys_pipelines.domain.money import parse_cents

MAX_QUANTITY = 1_000_000
# Order dates, in UTC after any offset: a range every database stores and every stage can
# compute with (PostgreSQL, SQLite and MariaDB DATETIME all hold it, with room either side).
FIRST_DATE = datetime(1900, 1, 1)
END_DATE = datetime(2200, 1, 1)  # exclusive
SUPPORTED_DATES = f"{FIRST_DATE:%Y-%m-%d} to {END_DATE.year - 1}-12-31, in UTC after the offset"
MAX_OFFSET_MINUTES = 14 * 60  # the widest offset in use (Pacific/Kiritimati, +14:00)
LIMITS = {"order_ref": 100, "customer_email": 320, "customer_ref": 100, "customer_name": 200, "sku": 100, "product_name": 300}

EMAIL = r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>.]+$"
ISO_DATE = (
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ](?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:\.[0-9]+)?)?"
    r"\s*(?P<offset>Z|[+-][0-9]{2}:?[0-9]{2})?$"
)
OFFSET = r"(?P<sign>[+-])(?P<hours>[0-9]{2}):?(?P<minutes>[0-9]{2})$"

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


def parse_quantity(column: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array, pa.Array]:
    """Text → (quantity, is_whole_number, is_positive, is_within_maximum, has_a_plus_sign).
    A whole number is ASCII digits; a leading "-" is read (and found not positive), a "+" is
    named as a problem of its own."""
    whole = pc.match_substring_regex(column, r"^[+-]?[0-9]+$")
    negative = pc.and_(whole, pc.starts_with(column, "-"))
    plus = pc.and_(whole, pc.starts_with(column, "+"))
    digits = pc.if_else(whole, pc.utf8_ltrim(column, "+-"), "0")
    huge = pc.greater(pc.utf8_length(pc.utf8_ltrim(digits, "0")), 7)
    value = pc.cast(pc.if_else(huge, "0", digits), pa.int64())
    positive = pc.and_(pc.invert(negative), pc.or_(huge, pc.greater(value, 0)))
    within = pc.or_(negative, pc.and_(pc.invert(huge), pc.less_equal(value, MAX_QUANTITY)))
    return value, whole, positive, within, plus


def _quantity(problems: Problems, column: pa.Array, name: str) -> tuple[pa.Array, pa.Array]:
    """The quantity, and where it is usable."""
    value, whole, positive, within, plus = per_distinct(column, parse_quantity)
    problems.add(pc.invert(whole), said(name, column, "is not a whole number"))
    problems.add(plus, said(name, column, "has a + sign (write the digits only)"))
    problems.add(pc.and_(whole, pc.invert(positive)), said(name, column, "is not positive"))
    problems.add(pc.and_(whole, pc.invert(within)), said(name, column, f"exceeds the maximum of {MAX_QUANTITY}"))
    return value, pc.and_(pc.and_(pc.and_(whole, positive), within), pc.invert(plus))


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


@dataclass
class ParsedDates:
    """Naive UTC timestamps (null where not usable) and why the others are not."""

    values: pa.Array
    not_a_date: pa.Array
    bad_offset: pa.Array
    out_of_range: pa.Array


def parse_dates(column: pa.Array, options: ValidationOptions) -> pa.Array:
    """Text → naive UTC timestamps (null where the text is not a usable date)."""
    return check_dates(column, options).values


def check_dates(column: pa.Array, options: ValidationOptions) -> ParsedDates:
    return ParsedDates(*per_distinct(column, lambda distinct: _check_distinct_dates(distinct, options)))


def _check_distinct_dates(column: pa.Array, options: ValidationOptions) -> tuple[pa.Array, ...]:
    offset = _offset_minutes(column) if not options.date_format or "%z" in options.date_format else None
    if offset is not None:
        minutes, bad_offset = offset
        # pyarrow reads any offset; one that does not exist must not shift the date.
        column = pc.if_else(bad_offset, pa.scalar(None, pa.string()), column)
    else:
        bad_offset = pa.array(np.zeros(len(column), dtype=bool))
    parsed = _parse_distinct_dates(column, options)
    in_range = pc.and_(
        pc.greater_equal(parsed, pa.scalar(FIRST_DATE, pa.timestamp("s"))),
        pc.less(parsed, pa.scalar(END_DATE, pa.timestamp("s"))),
    )
    out_of_range = pc.fill_null(pc.invert(in_range), False)
    usable = pc.fill_null(in_range, False)
    values = pc.if_else(usable, parsed, pa.scalar(None, pa.timestamp("s")))
    not_a_date = pc.and_(pc.is_null(parsed), pc.invert(bad_offset))
    return values, not_a_date, bad_offset, out_of_range


def _offset_minutes(column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The trailing ±HH:MM of each value, in minutes, and where it is not a real offset
    (minutes of 60 or more, or beyond ±14:00)."""
    parts = pc.extract_regex(column, OFFSET)
    found = parts.is_valid()
    hours = pc.cast(pc.if_else(found, parts.field("hours"), "0"), pa.int64())
    minutes = pc.cast(pc.if_else(found, parts.field("minutes"), "0"), pa.int64())
    total = pc.add(pc.multiply(hours, 60), minutes)
    bad = pc.and_(found, pc.or_(pc.greater_equal(minutes, 60), pc.greater(total, MAX_OFFSET_MINUTES)))
    return total, pc.fill_null(bad, False)


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
    """Local wall times → naive UTC. Times far outside the supported range are left as they
    are (time-zone rules do not reach year 0 or 9999): they fail the range check anyway."""
    if timezone == "UTC":
        return naive
    convertible = pc.fill_null(pc.and_(
        pc.greater_equal(naive, pa.scalar(datetime(1800, 1, 1), pa.timestamp("s"))),
        pc.less(naive, pa.scalar(datetime(2300, 1, 1), pa.timestamp("s"))),
    ), True)
    safe = pc.if_else(convertible, naive, pa.scalar(datetime(2000, 1, 1), pa.timestamp("s")))
    zoned = pc.assume_timezone(safe, timezone, ambiguous="earliest", nonexistent="latest")
    return pc.if_else(convertible, zoned.cast(pa.timestamp("s")), naive)


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
    # Control characters (NUL ...) in a column the import stores; ignored columns may hold any.
    for canonical, position in sorted(layout.positions.items(), key=lambda item: item[1]):
        column = chunk.columns[position]
        problems.add(pc.match_substring_regex(column, CONTROL_CHARACTERS), control_character(name(canonical), column))

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
        dates = check_dates(date_text, options)
        expected = f"format {options.date_format}" if options.date_format else "YYYY-MM-DD[ HH:MM[:SS]]"
        problems.add(dates.not_a_date, said(name("order_date"), date_text, f"is not a date ({expected})"))
        problems.add(dates.bad_offset, said(name("order_date"), date_text,
                                            "has an offset that does not exist (at most ±14:00, minutes below 60)"))
        problems.add(dates.out_of_range, said(name("order_date"), date_text,
                                              f"is outside the supported dates ({SUPPORTED_DATES})"))
        date_ok = pc.is_valid(dates.values)
        order_date = pc.fill_null(dates.values, pa.scalar(0, pa.timestamp("s")))
    else:
        stamp = (options.import_date or datetime(1970, 1, 1)).replace(microsecond=0)
        order_date = pa.array([stamp] * n, pa.timestamp("s"))
        date_ok = pa.array(np.ones(n, dtype=bool))

    order_ref = _text(chunk, layout, "order_ref")
    if order_ref is not None:
        required_text("order_ref", order_ref)
        ref_known = pc.and_(pc.greater(pc.utf8_length(order_ref), 0), pc.less_equal(pc.utf8_length(order_ref), 100))
    else:
        ref_known = pc.and_(date_ok, pc.greater(pc.utf8_length(pc.fill_null(customer_key, "")), 0))
        group_key = pc.binary_join_element_wise(
            pc.fill_null(customer_key, ""), pc.strftime(order_date, format="%Y-%m-%dT%H:%M:%S"), "|"
        )
        order_ref = _hash_map(group_key, derive_order_ref)

    bad = problems.any
    rejects = [_with_order_ref(reject, layout) for reject in chunk.malformed]
    if bad.any():
        rows = np.flatnonzero(bad)
        texts = chunk.raw_text(rows)
        reasons = problems.reasons(rows)
        lines = chunk.line_numbers[rows]
        taken = pa.array(rows, pa.int64())
        # The order each rejected line belongs to (its other lines are rejected at the merge).
        refs = pc.if_else(pc.fill_null(ref_known.take(taken), False), order_ref.take(taken), None).to_pylist()
        refs = [None if ref is None or CONTROL_CHARACTER.search(ref) else ref for ref in refs]
        rejects.extend(
            Reject(line_number=int(line), raw_text=text, reason=reason, order_ref=ref)
            for line, text, reason, ref in zip(lines, texts, reasons, refs, strict=True)
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




def control_character(name: str, column: pa.Array) -> Lazy:
    """"<name> holds the control character U+0000 (at character 3)": which one, and where."""

    def build(rows: pa.Array) -> pa.Array:
        messages = []
        for value in column.take(rows).to_pylist():
            found = CONTROL_CHARACTER.search(value or "")
            messages.append(
                f"{name} holds the control character U+{ord(found.group()):04X} (at character {found.start() + 1})"
                if found else ""
            )
        return pa.array(messages, pa.string())

    return Lazy(build)


def _with_order_ref(reject: Reject, layout: OrderLayout) -> Reject:
    """A line of the wrong shape still names its order when the order_ref column is there."""
    position = layout.positions.get("order_ref")
    if position is None or reject.order_ref is not None:
        return reject
    first_line = reject.raw_text.split("\n", 1)[0]
    fields = next(csv.reader([first_line]), [])
    ref = fields[position].strip() if position < len(fields) else ""
    if ref and len(ref) <= LIMITS["order_ref"] and not CONTROL_CHARACTER.search(ref):
        reject.order_ref = ref
    return reject


def format_cents(cents: pa.Array) -> pa.Array:
    """Integer cents → '12.34' text, vectorized."""
    units = pc.cast(pc.divide(cents, 100), pa.string())
    rest = pc.utf8_lpad(pc.cast(pc.subtract(cents, pc.multiply(pc.divide(cents, 100), 100)), pa.string()), 2, "0")
    return pc.binary_join_element_wise(units, rest, ".")
