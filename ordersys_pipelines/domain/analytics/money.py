"""Display of integer cents."""

from __future__ import annotations


def format_cents(cents: int, currency: str = "") -> str:
    """12345 → '123.45 EUR'; exact, thousands separated, sign kept."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(int(cents)), 100)
    text = f"{sign}{units:,}.{rest:02d}"
    return f"{text} {currency}" if currency else text
