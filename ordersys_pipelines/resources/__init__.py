"""Dagster resources built from settings."""

from __future__ import annotations

from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.imports import ImportsResource
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.resources.payment_gateway import PaymentGatewayResource
from ordersys_pipelines.resources.redis import RedisResource
from ordersys_pipelines.resources.secrets import secret, secret_list
from ordersys_pipelines.resources.workflow import WorkflowSettingsResource
from ordersys_pipelines.settings import Settings


def build_resources(settings: Settings) -> dict:
    """The resources every job and asset shares, keyed by the names they ask for."""
    return {
        "database": DatabaseResource(url=settings.database_url),
        "imports": ImportsResource(
            inbox=str(settings.inbox),
            chunk_rows=settings.chunk_rows,
            default_stock=settings.default_stock,
            timezone=settings.timezone,
        ),
        "redis": RedisResource(url=settings.effective_redis_url, key_prefix=settings.redis_key_prefix),
        "gateway": PaymentGatewayResource(
            secret=secret("ORDERSYS_GATEWAY_SECRET", settings.gateway_secret),
            approval_rate=settings.gateway_approval_rate,
            callback_delay_seconds=settings.gateway_callback_delay_seconds,
            duplicate_rate=settings.gateway_duplicate_rate,
            refund_failure_rate=settings.gateway_refund_failure_rate,
            seed=settings.gateway_seed,
            callback_tolerance_seconds=settings.callback_tolerance_seconds,
            previous_secrets=secret_list("ORDERSYS_GATEWAY_PREVIOUS_SECRETS", settings.gateway_previous_secrets),
            rejected_deliveries_kept=settings.rejected_deliveries_kept,
        ),
        "notifier": NotifierResource.from_settings(settings),
        "workflow": WorkflowSettingsResource(
            batch_size=settings.batch_size,
            claim_lease_seconds=settings.claim_lease_seconds,
            payment_timeout_seconds=settings.payment_timeout_seconds,
            max_runs_per_tick=settings.parallel_runs,
        ),
    }


__all__ = [
    "DatabaseResource",
    "ImportsResource",
    "NotifierResource",
    "PaymentGatewayResource",
    "RedisResource",
    "WorkflowSettingsResource",
    "build_resources",
    "secret",
]
