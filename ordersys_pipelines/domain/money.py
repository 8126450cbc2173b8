"""Integer minor units (cents) as text, exactly: integer arithmetic, never float.

Three renderings for three readers: `plain` is what an operator types back (`parse_amount`
reads it), `grouped` is for reports and the UI, `for_customer` is what a customer reads. And
one way to read amounts: `parse_cents` (vectorized, the import) and `parse_amount` (one value,
refund requests) share one grammar, so both accept exactly the same texts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

# pyarrow (and numpy with it) only to read amounts: `parse_cents` is the import's vectorized reader
# and `parse_amount` runs the same for one value. The renderings, which every stage uses, need
# neither, so the readers import it when called.
if TYPE_CHECKING:
    import pyarrow as pa

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
# ISO 4217 currencies whose minor unit is not a hundredth.
EXPONENTS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3}


def _parts(cents: int, exponent: int = 2) -> tuple[str, int, str]:
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amount must be integer minor units, got {cents!r}")
    major, minor = divmod(abs(cents), 10**exponent)
    return ("-" if cents < 0 else ""), major, (f".{minor:0{exponent}d}" if exponent else "")


def plain(cents: int) -> str:
    """1250 → '12.50', -5 → '-0.05', 123450 → '1234.50'."""
    sign, major, minor = _parts(cents)
    return f"{sign}{major}{minor}"


def grouped(cents: int, currency: str = "") -> str:
    """123450 → '1,234.50', with a currency: '1,234.50 EUR'."""
    sign, major, minor = _parts(cents)
    text = f"{sign}{major:,}{minor}"
    return f"{text} {currency}" if currency else text


def for_customer(cents: int, currency: str = "EUR") -> str:
    """`123450, "EUR"` → `€1,234.50`; currencies without a symbol here → `1,234.50 CHF`;
    the currency's own minor unit (JPY has none, KWD has three)."""
    currency = currency.upper()
    sign, major, minor = _parts(cents, EXPONENTS.get(currency, 2))
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{major:,}{minor}" if symbol else f"{sign}{major:,}{minor} {currency}"


# ---- reading amounts ------------------------------------------------------------------------
# One grammar for every amount the system reads (import files, refund requests): ASCII digits
# with an optional "." and cents, a leading "-" only to say that it is negative. No exponent,
# no "_" or "," separators, no "+", no other scripts' digits: "1e2", "1_0", "1,000.00", "١٢"
# and "１２" are not amounts. Digits beyond the second decimal are allowed only as zeros.
MAX_AMOUNT_DIGITS = 9  # whole units: up to 999,999,999.99
AMOUNT = r"^(?P<units>[0-9]*)(?:\.(?P<fraction>[0-9]*))?$"


class AmountError(ValueError):
    """An amount that is not an exact number of cents."""


def parse_cents(column: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Exact decimal text (a pyarrow string array, no sign) → (cents, is_not_an_amount,
    has_more_than_two_decimals), vectorized; never through float."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = pc.extract_regex(column, AMOUNT)
    units = pc.fill_null(parts.field("units"), "")
    fraction = pc.fill_null(parts.field("fraction"), "")
    matched = pc.and_(
        parts.is_valid(),
        pc.or_(pc.greater(pc.utf8_length(units), 0), pc.greater(pc.utf8_length(fraction), 0)),
    )
    too_big = pc.greater(pc.utf8_length(pc.utf8_ltrim(units, "0")), MAX_AMOUNT_DIGITS)
    bad = pc.or_(pc.invert(matched), too_big)
    extra_precision = pc.and_(matched, pc.invert(pc.match_substring_regex(fraction, r"^[0-9]{0,2}0*$")))
    usable = pc.and_(pc.invert(bad), pc.invert(extra_precision))
    units = pc.if_else(usable, pc.if_else(pc.equal(units, ""), "0", units), "0")
    fraction = pc.if_else(usable, pc.utf8_rpad(pc.utf8_slice_codeunits(fraction, 0, 2), 2, "0"), "00")
    cents = pc.add(pc.multiply(pc.cast(units, pa.int64()), 100), pc.cast(fraction, pa.int64()))
    return cents, bad, extra_precision


def parse_amount(text: str) -> int:
    """'12.50' → 1250, '-2.00' → -200 (whether a negative amount is acceptable is the caller's
    rule), by the same grammar as the import's amounts; AmountError naming what is wrong."""
    if not isinstance(text, str):
        raise AmountError(f"amount {text!r} is not a number")
    stripped = text.strip()
    negative = stripped.startswith("-")
    digits = stripped[1:] if negative else stripped
    if digits.lstrip("+").lower() in ("nan", "inf", "infinity", "snan"):
        raise AmountError(f"amount {text!r} is not a finite number")
    import pyarrow as pa

    cents, bad, extra_precision = (array[0].as_py() for array in parse_cents(pa.array([digits], pa.string())))
    if extra_precision:
        raise AmountError(f"amount {text!r} has more than 2 decimals")
    if bad:
        if re.fullmatch(AMOUNT, digits) and len(digits.split(".")[0].lstrip("0")) > MAX_AMOUNT_DIGITS:
            raise AmountError(f"amount {text!r} is larger than 999999999.99")
        raise AmountError(f"amount {text!r} is not a number (digits with an optional . and cents)")
    return -cents if negative else cents
