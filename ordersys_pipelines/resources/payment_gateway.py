"""The payment gateway as a Dagster resource (a simulator that keeps its state in the database)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg
from sqlalchemy import Connection

from ordersys_pipelines.domain.payments import gateway
from ordersys_pipelines.domain.payments.config import DEFAULT_DECLINE_REASONS, GatewayConfig


class PaymentGatewayResource(dg.ConfigurableResource):
    """Simulated gateway: approves payments at `approval_rate`, answers with HMAC-signed
    callbacks (some delivered twice), and fails refund calls at `refund_failure_rate`."""

    secret: str
    approval_rate: float = 0.97
    decline_reasons: list[str] = list(DEFAULT_DECLINE_REASONS)
    callback_delay_seconds: float = 0.0
    duplicate_rate: float = 0.05
    refund_failure_rate: float = 0.05
    seed: int | None = None
    callback_tolerance_seconds: int = 300
    # Comma-separated secrets being rotated out (a string, so it can come from an EnvVar).
    previous_secrets: str = ""
    rejected_deliveries_kept: int = 10_000

    @property
    def config(self) -> GatewayConfig:
        return GatewayConfig(
            secret=self.secret,
            approval_rate=self.approval_rate,
            decline_reasons=tuple(self.decline_reasons),
            callback_delay_seconds=self.callback_delay_seconds,
            duplicate_rate=self.duplicate_rate,
            refund_failure_rate=self.refund_failure_rate,
            seed=self.seed,
            callback_tolerance_seconds=self.callback_tolerance_seconds,
            previous_secrets=tuple(s.strip() for s in self.previous_secrets.split(",") if s.strip()),
            rejected_deliveries_kept=self.rejected_deliveries_kept,
        )

    def refund(self, conn: Connection, reference: str, payment_ref: str, amount_cents: int):
        """Refund `amount_cents` of payment `payment_ref`; a repeated `reference` is recognised
        and never paid out twice. Returns a RefundOutcome."""
        from ordersys_pipelines.domain.refunds import gateway_refunds

        return gateway_refunds.refund(
            conn, self.config, reference=reference, payment_ref=payment_ref, amount_cents=amount_cents
        )
    def initiate(
        self, conn: Connection, requests: Sequence[gateway.PaymentRequest], now: datetime | None = None
    ) -> dict[int, str]:
        """Start payments; order id → payment reference (see domain.payments.gateway.initiate)."""
        return gateway.initiate(conn, requests, self.config, now)
