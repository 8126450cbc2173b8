"""Amounts in minor units (cents) as customers read them, exactly (integer arithmetic, no float)."""

from __future__ import annotations

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
# ISO 4217 currencies whose minor unit is not a hundredth.
EXPONENTS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3}


def format_cents(cents: int, currency: str = "EUR") -> str:
    """`123450, "EUR"` → `€1,234.50`; currencies without a symbol here → `1,234.50 CHF`."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amount must be integer minor units, got {cents!r}")
    currency = currency.upper()
    exponent = EXPONENTS.get(currency, 2)
    major, minor = divmod(abs(cents), 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    sign = "-" if cents < 0 else ""
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency}"
