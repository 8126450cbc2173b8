"""Refund amounts are read exactly as the import reads amounts (`domain.money`)."""

from ordersys_pipelines.domain.money import AmountError, parse_amount

__all__ = ["AmountError", "parse_amount"]
