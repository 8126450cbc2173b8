"""Customer notifications as a Dagster resource: channel settings, retry policy, templates."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.operator import notify_operator
from ordersys_pipelines.settings import Settings


class NotifierResource(dg.ConfigurableResource):
    """Where and how notifications go: `channel` (log, email, webhook; customers may override),
    SMTP and webhook settings, retries (`max_attempts`, exponential `backoff_seconds`), the
    circuit breaker (`breaker_failures` in a row, `breaker_pause_seconds`), batch size, claim
    lease, and an optional templates folder overriding the packaged templates."""

    channel: str = "log"
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    batch_size: int = 200
    lease_seconds: int = 300
    timeout_seconds: float = 10.0
    breaker_failures: int = 5
    breaker_pause_seconds: float = 30.0
    templates_dir: str | None = None
    currency: str = "EUR"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: bool = False
    smtp_sender: str = "orders@ordersys.local"
    smtp_username: str | None = None
    smtp_password: str | None = None
    webhook_url: str | None = None
    webhook_secret: str = "ordersys-webhook-secret"
    operator_email: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierResource:
        return cls(**NotifierConfig.from_settings(settings).__dict__)

    @property
    def config(self) -> NotifierConfig:
        return NotifierConfig(**{name: getattr(self, name) for name in NotifierConfig.__dataclass_fields__})

    def notify_operator(self, subject: str, body: str) -> str:
        return notify_operator(self.config, subject, body)


__all__ = ["NotifierResource", "notify_operator"]
