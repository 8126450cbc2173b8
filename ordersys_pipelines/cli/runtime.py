"""What commands share: settings, resources and the Dagster instance runs are recorded in.

Dagster and the resources are imported inside the functions that need them, so a command that
only reads the database (`ordersys status`) does not pay for importing them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ordersys_pipelines.settings import Settings, get_settings

if TYPE_CHECKING:
    import dagster as dg

EMBEDDED_REDIS_DIR = Path(".ordersys") / "redis"


def load_settings(*, need_redis: bool = False, upgrade_schema: bool = True) -> Settings:
    """Settings from the environment; the schema brought up to date; with `need_redis`, a Redis
    that answers (a configured URL must answer; unconfigured, the embedded one is started)."""
    settings = get_settings()
    if upgrade_schema:
        from ordersys_pipelines.db import migrate

        migrate.upgrade(settings.database_url)
    if need_redis:
        from ordersys_pipelines.resources.redis import resolve_redis_url

        url = resolve_redis_url(settings.redis_url, EMBEDDED_REDIS_DIR)
        if url != settings.redis_url:
            # Runs started from here read the same settings, so record the embedded URL.
            os.environ["ORDERSYS_REDIS_URL"] = url
            settings = get_settings()
    return settings


def instance() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME when set (so the UI shows CLI runs), else an ephemeral one;
    the runs it executes in-process write their events as the stack's do (DAGSTER_EVENT_ENV)."""
    import dagster as dg

    from ordersys_pipelines.cli.instance_home import apply_event_env

    apply_event_env()
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def resources(settings: Settings) -> dict:
    """For runs (Dagster resolves their `EnvVar` secrets when the run starts)."""
    from ordersys_pipelines.resources import build_resources

    return build_resources(settings)


def resource(settings: Settings, name: str) -> dg.ConfigurableResource:
    """One resource for use outside a run, its `EnvVar` secrets resolved."""
    from ordersys_pipelines.resources import build_resources

    return build_resources(settings)[name].process_config_and_initialize()
