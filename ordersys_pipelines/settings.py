"""Environment → settings. Every ORDERSYS_* variable is read here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ordersys_pipelines.domain.notifications.config import CHANNELS as NOTIFY_CHANNELS
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.payments.config import GatewayConfig

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_CELERY_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"


def _default_database_url() -> str:
    return f"sqlite:///{Path.cwd() / '.ordersys' / 'ordersys.db'}"


def _default_notify_log_file() -> str:
    return str(Path.cwd() / ".ordersys" / "notifications.log")


def default_kpi_start_date(today: date | None = None) -> str:
    """The first day of the month a year back: the daily KPI partitions cover the last year
    (about 370 days, not every day since some fixed year) and the start moves once a month, not
    every day. Older orders are reported by the `no_orders_before_start` check."""
    today = today or date.today()
    return date(today.year - 1, today.month, 1).isoformat()


class SettingsError(ValueError):
    """A setting has a value the system cannot use."""


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(name: str, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _database_url(url: str) -> str:
    """`mysql://` and `mariadb://` without a driver mean PyMySQL, the one installed (SQLAlchemy
    would pick mysqlclient, which is not)."""
    for scheme in ("mysql://", "mariadb://"):
        if url.startswith(scheme):
            return scheme[:-3] + "+pymysql://" + url[len(scheme):]
    return url


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except Exception:
        return False  # validate() names the bad zone
    return True


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def _bool(name: str, default: bool) -> bool:
    raw = _str(name, str(default)).strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a yes/no value (true, false, 1, 0, yes, no)")


def _list(name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around and between the items are dropped."""
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=_default_database_url)
    # None means "not configured": the default URL is tried and, for the demo, an embedded
    # Redis is started when nothing answers there. A configured URL is never replaced.
    redis_url: str | None = None
    redis_key_prefix: str = ""
    inbox: Path = Path("data/inbox")
    chunk_rows: int = 50_000
    default_stock: int = 0
    batch_size: int = 10_000
    # Most runs of one stage a sensor tick starts for a large backlog (the run queue's tag
    # limits in dagster.yaml decide how many execute at once).
    parallel_runs: int = 4
    # How often the backlog sensors (workflow, settlement, refunds, notifications) and the
    # run-status sensors that chain the stages look. A look is a few capped queries, so a few
    # seconds is cheap. Dagster's sensor daemon loops every 5 s and skips a sensor whose last
    # tick began less than its interval ago; a tick begins a moment after its loop does, so an
    # interval of exactly 5 s is met only every other loop (a look every 10 s). 4 s is a look
    # on every loop; less buys nothing.
    sensor_interval_seconds: int = 4
    timezone: str = "UTC"
    kpi_start_date: str = field(default_factory=default_kpi_start_date)
    currency: str = "EUR"
    payment_timeout_seconds: int = 900
    claim_lease_seconds: int = 300
    # A step that fails for a transient cause (database, Redis, SMTP or broker unreachable) is
    # tried again this many times, after delay, 3 x delay, 7 x delay ... (step_retries.py).
    step_retries: int = 3
    step_retry_delay_seconds: float = 2.0
    gateway_secret: str = "ordersys-dev-secret"
    # Secrets being rotated out: callbacks signed with them are still accepted (comma-separated
    # in ORDERSYS_GATEWAY_PREVIOUS_SECRETS; the gateway signs with gateway_secret only).
    gateway_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    gateway_approval_rate: float = GatewayConfig.approval_rate
    gateway_refund_failure_rate: float = GatewayConfig.refund_failure_rate
    gateway_duplicate_rate: float = GatewayConfig.duplicate_rate
    gateway_callback_delay_seconds: float = GatewayConfig.callback_delay_seconds
    gateway_seed: int | None = None
    callback_tolerance_seconds: int = GatewayConfig.callback_tolerance_seconds
    # Most rejected callback deliveries kept (bounded records); older ones are pruned.
    rejected_deliveries_kept: int = GatewayConfig.rejected_deliveries_kept
    refund_max_attempts: int = 5
    refund_backoff_seconds: int = 30
    notify_channel: str = NotifierConfig.channel
    notify_log_file: str = NotifierConfig.log_file
    notify_max_attempts: int = NotifierConfig.max_attempts
    # Retry delay after the n-th failed attempt: backoff * 2**(n-1), at most an hour.
    notify_backoff_seconds: float = NotifierConfig.backoff_seconds
    notify_batch_size: int = NotifierConfig.batch_size
    notify_timeout_seconds: float = NotifierConfig.timeout_seconds
    notify_breaker_failures: int = NotifierConfig.breaker_failures
    notify_breaker_pause_seconds: float = NotifierConfig.breaker_pause_seconds
    notify_templates_dir: Path | None = None
    smtp_host: str = NotifierConfig.smtp_host
    smtp_port: int = NotifierConfig.smtp_port
    smtp_tls: bool = NotifierConfig.smtp_tls
    smtp_sender: str = NotifierConfig.smtp_sender
    smtp_username: str | None = None
    smtp_password: str | None = None
    notify_webhook_url: str | None = None
    notify_webhook_secret: str = NotifierConfig.webhook_secret
    operator_email: str | None = None
    # Where the jobs' steps run: in the run's process (in_process), a process per step
    # (multiprocess) or, for the op jobs, on Celery workers (executors.py).
    executor: str = "in_process"
    celery_broker: str = DEFAULT_CELERY_BROKER
    celery_backend: str = "rpc://"
    celery_queue: str = "ordersys"
    # The workflow run also applies the payment callbacks already due when its payments are
    # started (reserve → pay → settle in one run); payment_settlement takes the later ones.
    settle_in_workflow: bool = True

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        seed = env("ORDERSYS_GATEWAY_SEED")
        templates = env("ORDERSYS_NOTIFY_TEMPLATES")
        timezone = _str("ORDERSYS_TIMEZONE", "UTC")
        local_today = datetime.now(ZoneInfo(timezone)).date() if _known_zone(timezone) else None
        settings = cls(
            database_url=_database_url(_str("ORDERSYS_DATABASE_URL", _default_database_url())),
            redis_url=env("ORDERSYS_REDIS_URL") or None,
            redis_key_prefix=_str("ORDERSYS_REDIS_PREFIX", ""),
            inbox=Path(_str("ORDERSYS_INBOX", "data/inbox")),
            chunk_rows=_int("ORDERSYS_CHUNK_ROWS", 50_000, minimum=1),
            default_stock=_int("ORDERSYS_DEFAULT_STOCK", 0),
            batch_size=_int("ORDERSYS_BATCH_SIZE", 10_000, minimum=1),
            parallel_runs=_int("ORDERSYS_PARALLEL_RUNS", 4, minimum=1),
            sensor_interval_seconds=_int("ORDERSYS_SENSOR_INTERVAL", cls.sensor_interval_seconds, minimum=1),
            timezone=timezone,
            kpi_start_date=_str("ORDERSYS_KPI_START_DATE", default_kpi_start_date(local_today)),
            currency=_str("ORDERSYS_CURRENCY", "EUR"),
            payment_timeout_seconds=_int("ORDERSYS_PAYMENT_TIMEOUT", 900, minimum=1),
            claim_lease_seconds=_int("ORDERSYS_CLAIM_LEASE_SECONDS", 300, minimum=1),
            step_retries=_int("ORDERSYS_STEP_RETRIES", cls.step_retries),
            step_retry_delay_seconds=_float("ORDERSYS_STEP_RETRY_DELAY", cls.step_retry_delay_seconds, minimum=0),
            gateway_secret=_str("ORDERSYS_GATEWAY_SECRET", "ordersys-dev-secret"),
            gateway_previous_secrets=_list("ORDERSYS_GATEWAY_PREVIOUS_SECRETS"),
            gateway_approval_rate=_float("ORDERSYS_GATEWAY_APPROVAL_RATE", cls.gateway_approval_rate),
            gateway_refund_failure_rate=_float("ORDERSYS_GATEWAY_REFUND_FAILURE_RATE", cls.gateway_refund_failure_rate),
            gateway_duplicate_rate=_float("ORDERSYS_GATEWAY_DUPLICATE_RATE", cls.gateway_duplicate_rate),
            gateway_callback_delay_seconds=_float("ORDERSYS_GATEWAY_CALLBACK_DELAY", cls.gateway_callback_delay_seconds),
            gateway_seed=int(seed) if seed else None,
            callback_tolerance_seconds=_int("ORDERSYS_CALLBACK_TOLERANCE", cls.callback_tolerance_seconds, minimum=1),
            rejected_deliveries_kept=_int("ORDERSYS_REJECTED_DELIVERIES_KEPT", cls.rejected_deliveries_kept, minimum=1),
            refund_max_attempts=_int("ORDERSYS_REFUND_MAX_ATTEMPTS", 5, minimum=1),
            refund_backoff_seconds=_int("ORDERSYS_REFUND_BACKOFF_SECONDS", 30),
            notify_channel=_str("ORDERSYS_NOTIFY_CHANNEL", cls.notify_channel),
            notify_log_file=_str("ORDERSYS_NOTIFY_LOG_FILE", _default_notify_log_file()),
            notify_max_attempts=_int("ORDERSYS_NOTIFY_MAX_ATTEMPTS", cls.notify_max_attempts, minimum=1),
            notify_backoff_seconds=_float("ORDERSYS_NOTIFY_BACKOFF_SECONDS", cls.notify_backoff_seconds, minimum=0),
            notify_batch_size=_int("ORDERSYS_NOTIFY_BATCH_SIZE", cls.notify_batch_size, minimum=1),
            notify_timeout_seconds=_float("ORDERSYS_NOTIFY_TIMEOUT", cls.notify_timeout_seconds, minimum=0.1),
            notify_breaker_failures=_int("ORDERSYS_NOTIFY_BREAKER_FAILURES", cls.notify_breaker_failures, minimum=1),
            notify_breaker_pause_seconds=_float("ORDERSYS_NOTIFY_BREAKER_PAUSE", cls.notify_breaker_pause_seconds,
                                                minimum=0),
            notify_templates_dir=Path(templates) if templates else None,
            smtp_host=_str("ORDERSYS_SMTP_HOST", cls.smtp_host),
            smtp_port=_int("ORDERSYS_SMTP_PORT", cls.smtp_port, minimum=1),
            smtp_tls=_str("ORDERSYS_SMTP_TLS", str(cls.smtp_tls)).lower() in ("1", "true", "yes"),
            smtp_sender=_str("ORDERSYS_SMTP_SENDER", cls.smtp_sender),
            smtp_username=env("ORDERSYS_SMTP_USERNAME") or None,
            smtp_password=env("ORDERSYS_SMTP_PASSWORD") or None,
            notify_webhook_url=env("ORDERSYS_NOTIFY_WEBHOOK_URL") or None,
            notify_webhook_secret=_str("ORDERSYS_NOTIFY_WEBHOOK_SECRET", cls.notify_webhook_secret),
            operator_email=env("ORDERSYS_OPERATOR_EMAIL") or None,
            executor=_str("ORDERSYS_EXECUTOR", cls.executor),
            celery_broker=_str("ORDERSYS_CELERY_BROKER", DEFAULT_CELERY_BROKER),
            celery_backend=_str("ORDERSYS_CELERY_BACKEND", "rpc://"),
            celery_queue=_str("ORDERSYS_CELERY_QUEUE", "ordersys"),
            settle_in_workflow=_bool("ORDERSYS_SETTLE_IN_WORKFLOW", cls.settle_in_workflow),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except Exception:
            raise SettingsError(f"ORDERSYS_TIMEZONE={self.timezone!r} is not a known time zone") from None
        try:
            date.fromisoformat(self.kpi_start_date)
        except ValueError:
            raise SettingsError(
                f"ORDERSYS_KPI_START_DATE={self.kpi_start_date!r} is not a date (YYYY-MM-DD)"
            ) from None
        for name in ("gateway_approval_rate", "gateway_refund_failure_rate", "gateway_duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"{name}={value} must lie between 0 and 1")
        if self.notify_channel not in NOTIFY_CHANNELS:
            raise SettingsError(
                f"ORDERSYS_NOTIFY_CHANNEL={self.notify_channel!r} is not a channel; valid: {', '.join(NOTIFY_CHANNELS)}"
            )
        if self.executor not in EXECUTORS:
            raise SettingsError(f"ORDERSYS_EXECUTOR={self.executor!r} is not an executor; valid: {', '.join(EXECUTORS)}")
        if self.notify_channel == "webhook" and not self.notify_webhook_url:
            raise SettingsError("ORDERSYS_NOTIFY_CHANNEL=webhook needs ORDERSYS_NOTIFY_WEBHOOK_URL")

    def as_table(self) -> list[tuple[str, str]]:
        return [(f.name, str(getattr(self, f.name))) for f in fields(self) if f.repr]  # secrets have repr=False


def get_settings() -> Settings:
    return Settings.from_env()
