"""Dagster resources built from settings."""

from __future__ import annotations

from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.redis import RedisResource
from ordersys_pipelines.settings import Settings


def build_resources(settings: Settings) -> dict:
    """The resources every job and asset shares, keyed by the names they ask for."""
    return {
        "database": DatabaseResource(url=settings.database_url),
        "redis": RedisResource(url=settings.effective_redis_url, key_prefix=settings.redis_key_prefix),
    }


__all__ = ["DatabaseResource", "RedisResource", "build_resources"]
