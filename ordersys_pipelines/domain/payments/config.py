"""Settings of the simulated payment gateway."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DECLINE_REASONS = ("insufficient_funds", "card_expired", "do_not_honor", "suspected_fraud")


@dataclass(frozen=True)
class GatewayConfig:
    secret: str
    approval_rate: float = 0.97
    decline_reasons: tuple[str, ...] = DEFAULT_DECLINE_REASONS
    callback_delay_seconds: float = 0.0
    duplicate_rate: float = 0.05
    refund_failure_rate: float = 0.05
    seed: int | None = None
    # How far a callback's signed timestamp may lie from its delivery (replay protection).
    callback_tolerance_seconds: int = 300
