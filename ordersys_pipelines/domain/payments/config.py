"""Settings of the simulated payment gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_DECLINE_REASONS = ("insufficient_funds", "card_expired", "do_not_honor", "suspected_fraud")


@dataclass(frozen=True)
class GatewayConfig:
    # The gateway signs with `secret`; callbacks signed with one of `previous_secrets` are still
    # accepted while a rotation is under way (see the operator guide). Never shown anywhere.
    secret: str = field(repr=False)
    approval_rate: float = 0.97
    decline_reasons: tuple[str, ...] = DEFAULT_DECLINE_REASONS
    callback_delay_seconds: float = 0.0
    duplicate_rate: float = 0.05
    refund_failure_rate: float = 0.05
    seed: int | None = None
    # How far a callback's signed timestamp may lie from its delivery (replay protection).
    callback_tolerance_seconds: int = 300
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Most rejected deliveries kept in the inbox (each a bounded record); older ones are pruned.
    rejected_deliveries_kept: int = 10_000

    @property
    def accepted_secrets(self) -> tuple[str, ...]:
        """The secrets a callback signature may use: the current one first."""
        return (self.secret, *(s for s in self.previous_secrets if s and s != self.secret))
