"""The payment gateway as a Dagster resource (a simulator that keeps its state in the database)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from ordersys_pipelines.domain.payments import gateway
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.resources.config_fields import resource_with_fields_of


class PaymentGatewayResource(resource_with_fields_of(GatewayConfig)):
    """Simulated gateway: approves payments at `approval_rate`, answers with HMAC-signed
    callbacks (some delivered twice), and fails refund calls at `refund_failure_rate`. The
    fields are GatewayConfig's (domain/payments/config.py)."""

    # Comma-separated: a string rather than a list, so that it can be a dg.EnvVar (never shown).
    previous_secrets: str = ""

    @property
    def config(self) -> GatewayConfig:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(GatewayConfig)}
        values["decline_reasons"] = tuple(values["decline_reasons"])
        values["previous_secrets"] = tuple(s.strip() for s in self.previous_secrets.split(",") if s.strip())
        return GatewayConfig(**values)

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
