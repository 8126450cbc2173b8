"""Money as text ↔ integer cents, exactly (Decimal, never float)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


class AmountError(ValueError):
    """An amount that is not an exact number of cents."""


def parse_amount(text: str) -> int:
    """'12.50' → 1250. More than two decimals, non-numbers and non-finite values are errors;
    the sign is kept (whether a negative amount is acceptable is the caller's rule)."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise AmountError(f"amount {text!r} is not a number") from None
    if not value.is_finite():
        raise AmountError(f"amount {text!r} is not a finite number")
    cents = value * 100
    if cents != cents.to_integral_value():
        raise AmountError(f"amount {text!r} has more than 2 decimals")
    return int(cents)
