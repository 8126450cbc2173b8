"""Customer notifications as a Dagster resource: channel settings, retry policy, templates."""

from __future__ import annotations

from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.operator import notify_operator
from ordersys_pipelines.resources.config_fields import resource_with_fields_of
from ordersys_pipelines.resources.secrets import secret
from ordersys_pipelines.settings import Settings


class NotifierResource(resource_with_fields_of(NotifierConfig)):
    """Where and how notifications go: `channel` (log, email, webhook; customers may override),
    SMTP and webhook settings, retries (`max_attempts`, exponential `backoff_seconds`), the
    circuit breaker (`breaker_failures` in a row, `breaker_pause_seconds`), batch size, claim lease, and an optional templates folder overriding the packaged templates. The
    fields are NotifierConfig's (domain/notifications/config.py)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifierResource:
        values = NotifierConfig.from_settings(settings).__dict__
        return cls(**{
            **values,
            "smtp_username": secret("ORDERSYS_SMTP_USERNAME", values["smtp_username"]),
            "smtp_password": secret("ORDERSYS_SMTP_PASSWORD", values["smtp_password"]),
            "webhook_secret": secret("ORDERSYS_NOTIFY_WEBHOOK_SECRET", values["webhook_secret"]),
        })

    def notify_operator(self, subject: str, body: str) -> str:
        return notify_operator(self.config, subject, body)


__all__ = ["NotifierResource", "notify_operator"]
