"""Integer minor units (cents) as text, exactly: integer arithmetic, never float.

Three renderings for three readers: `plain` is what an operator types back (`parse_amount`
reads it), `grouped` is for reports and the UI, `for_customer` is what a customer reads.
"""

from __future__ import annotations

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
