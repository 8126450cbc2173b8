"""What the notifier needs to know: channel settings, retry policy and templates."""

from __future__ import annotations

from dataclasses import dataclass

CHANNELS = ("log", "email", "webhook")
STATUSES = ("pending", "sending", "sent", "failed")
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class NotifierConfig:
    channel: str = "log"
    # Where the log channel writes its JSON lines: a file (appended to), or "-" for stderr.
    log_file: str = ".ordersys/notifications.log"
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    batch_size: int = 1000
    # How long a dispatch run owns the notifications it claimed; renewed while it sends.
    lease_seconds: int = 300
    timeout_seconds: float = 10.0
    # Circuit breaker: this many channel failures in a row (refused, timeout, HTTP 5xx) stop a
    # run trying the channel; its untried notifications wait breaker_pause_seconds, attempts unchanged.
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
    def from_settings(cls, settings) -> NotifierConfig:
        """From `ordersys_pipelines.settings.Settings` (or anything with the same fields)."""
        templates = settings.notify_templates_dir
        return cls(
            channel=settings.notify_channel,
            log_file=settings.notify_log_file,
            max_attempts=settings.notify_max_attempts,
            backoff_seconds=settings.notify_backoff_seconds,
            batch_size=settings.notify_batch_size,
            lease_seconds=settings.claim_lease_seconds,
            timeout_seconds=settings.notify_timeout_seconds,
            breaker_failures=settings.notify_breaker_failures,
            breaker_pause_seconds=settings.notify_breaker_pause_seconds,
            templates_dir=str(templates) if templates else None,
            currency=settings.currency,
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            smtp_tls=settings.smtp_tls,
            smtp_sender=settings.smtp_sender,
            smtp_username=settings.smtp_username,
            smtp_password=settings.smtp_password,
            webhook_url=settings.notify_webhook_url,
            webhook_secret=settings.notify_webhook_secret,
            operator_email=settings.operator_email,
        )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1, 2, 3 ...)."""
        return min(self.backoff_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
