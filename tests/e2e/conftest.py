"""The real stack (`scripts/stack.sh`: dg dev = webserver + daemon) on a free port, with a
temporary DAGSTER_HOME, its own PostgreSQL database, inbox and Redis key prefix."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from rejected_support import NO_PRICES, REJECTED_NAME
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.db import migrate

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("ORDERSYS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ORDERSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class Stack:
    url: str
    env: dict[str, str]
    inbox: Path
    database_url: str
    redis_prefix: str
    home: Path

    def log(self) -> str:
        path = self.home / "dagster-dev.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    name = f"ordersys_e2e_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(database_url)

    base = tmp_path_factory.mktemp("stack")
    port = _free_port()
    prefix = f"ordersys_e2e:{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ,
        "PORT": str(port),
        "DAGSTER_HOME": str(base / "dagster_home"),
        "ORDERSYS_DATABASE_URL": database_url,
        "ORDERSYS_REDIS_URL": REDIS_URL,
        "ORDERSYS_REDIS_PREFIX": prefix,
        "ORDERSYS_INBOX": str(base / "inbox"),
        "ORDERSYS_GATEWAY_SEED": "11",
        "ORDERSYS_KPI_START_DATE": "2025-01-01",  # before the days the flow test imports
    }
    env.pop("DAGSTER_PG_URL", None)
    started = subprocess.run([str(ROOT / "scripts/stack.sh"), "up"], env=env, capture_output=True, text=True)
    stack = Stack(f"http://127.0.0.1:{port}", env, base / "inbox", database_url, prefix, base / "dagster_home")
    try:
        assert started.returncode == 0, started.stdout + started.stderr + stack.log()
        yield stack
    finally:
        subprocess.run([str(ROOT / "scripts/stack.sh"), "down"], env=env, capture_output=True)
        from ordersys_pipelines.db.engine import get_engine

        get_engine(database_url).dispose()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


ALERT_ACTED = 'Sensor "operator_alert_on_failure" acted on run status FAILURE'


@dataclass(frozen=True)
class RejectedFile:
    name: str
    run_id: str
    runs: int  # runs of the file once its alert was sent
    alerts: int  # the alert sensor's reactions to its run


def _runs_of(instance, name: str):
    import dagster as dg

    return instance.get_runs(dg.RunsFilter(tags={"ordersys/file": name}))


def _alerts(instance, run_id: str) -> int:
    import dagster as dg

    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return sum(1 for record in events if ALERT_ACTED in (record.message or ""))


@pytest.fixture(scope="session")
def rejected_file(stack) -> RejectedFile:
    """A file without price columns dropped into the stack's inbox, once its run has failed and
    the operator alert sensor has acted on it (or 180 s have passed)."""
    import time

    import dagster as dg

    name = REJECTED_NAME
    staged = stack.inbox.parent / name
    staged.write_text(NO_PRICES)
    staged.rename(stack.inbox / name)
    deadline = time.monotonic() + 180
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        while True:
            failed = [r for r in _runs_of(instance, name) if r.status == dg.DagsterRunStatus.FAILURE]
            if failed and _alerts(instance, failed[-1].run_id) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert failed, f"no failed run of {name} within 180 s\n{stack.log()}"
        run_id = failed[-1].run_id
        return RejectedFile(name, run_id, len(_runs_of(instance, name)), _alerts(instance, run_id))
