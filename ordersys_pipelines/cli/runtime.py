"""What commands share: settings, resources and the Dagster instance runs are recorded in."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ordersys_pipelines.db import migrate
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.resources.redis import resolve_redis_url
from ordersys_pipelines.settings import DEFAULT_REDIS_URL, Settings, get_settings


def load_settings(*, need_redis: bool = False, upgrade_schema: bool = True) -> Settings:
    """Settings from the environment; the schema brought up to date; with `need_redis`, a Redis
    that answers (a configured URL must answer; unconfigured, an embedded one is started)."""
    settings = get_settings()
    if upgrade_schema:
        migrate.upgrade(settings.database_url)
    if need_redis:
        url = resolve_redis_url(settings.redis_url, DEFAULT_REDIS_URL, Path(".ordersys") / "redis")
        if url != settings.effective_redis_url:
            # Runs started from here read the same settings, so record the embedded URL.
            os.environ["ORDERSYS_REDIS_URL"] = url
            settings = get_settings()
    return settings


def instance() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME when set (so the UI shows CLI runs), else an ephemeral one."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def resources(settings: Settings) -> dict:
    """For runs (Dagster resolves their `EnvVar` secrets when the run starts)."""
    return build_resources(settings)


def resource(settings: Settings, name: str) -> dg.ConfigurableResource:
    """One resource for use outside a run, its `EnvVar` secrets resolved."""
    return build_resources(settings)[name].process_config_and_initialize()
