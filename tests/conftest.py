"""Test fixtures on real services.

Each test session (each xdist worker) creates its own PostgreSQL and MariaDB databases and drops
them at the end, uses its own SQLite file, and its own Redis key prefix, so parallel sessions never
meet. Tables are emptied before each test that asks for a database.

`--backends=pg,sqlite,mariadb` (the default) chooses the databases: tests on `db_url` run once
per chosen backend (ids `[pg]`, `[sqlite]`, `[mariadb]`), and tests bound to one backend by
fixture (`pg_url`, `sqlite_url`, `mariadb_url`) run only when it is chosen. Concurrency tests use
`locking_url`: PostgreSQL and MariaDB, the backends with row locks.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.cli.instance_home import DAGSTER_EVENT_ENV
from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import metadata
from ordersys_pipelines.resources.redis import RedisResource, connect
from ordersys_pipelines.settings import Settings

PG_ADMIN_URL = os.environ.get("ORDERSYS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("ORDERSYS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")
REDIS_URL = os.environ.get("ORDERSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SESSION_ID = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"

BACKENDS = ("pg", "sqlite", "mariadb")
LOCKING_BACKENDS = ("pg", "mariadb")
# The fixture that binds a test to one backend.
BACKEND_FIXTURES = {"pg": "pg_url", "sqlite": "sqlite_url", "mariadb": "mariadb_url"}


@pytest.fixture(autouse=True)
def dagster_event_switches_as_dagster_has_them(monkeypatch) -> None:
    """A CLI command run in this process sets Dagster's event switches in os.environ (as the CLI
    does for its own runs); each test starts from Dagster's defaults and sets them when it means to."""
    for name in DAGSTER_EVENT_ENV:
        monkeypatch.delenv(name, raising=False)


def pytest_addoption(parser):
    parser.addoption(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated databases to test on, of {', '.join(BACKENDS)} (default: all)",
    )


def selected_backends(config) -> set[str]:
    chosen = {name.strip() for name in config.getoption("--backends").split(",") if name.strip()}
    unknown = chosen - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"--backends: unknown {', '.join(sorted(unknown))}; choose from {BACKENDS}")
    return chosen


def pytest_collection_modifyitems(config, items):
    chosen = selected_backends(config)
    keep, drop = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        backends = {params[name] for name in ("db_url", "locking_url") if name in params}
        bound = {name for name, fixture in BACKEND_FIXTURES.items() if fixture in item.fixturenames}
        if (backends | bound) - chosen:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@contextlib.contextmanager
def scratch_database(admin_url: str, create: str, drop: str) -> Iterator[str]:
    """A migrated database of this session's own on the server of `admin_url`, dropped after."""
    name = f"ordersys_test_{SESSION_ID}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(create.format(name=name)))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(drop.format(name=name)))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    with scratch_database(PG_ADMIN_URL, 'CREATE DATABASE "{name}"',
                          'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)') as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ordersys.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def mariadb_database_url() -> Iterator[str]:
    # A binary collation: keys compare case-sensitively, as on PostgreSQL.
    with scratch_database(MARIADB_ADMIN_URL, "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                          "DROP DATABASE IF EXISTS `{name}`") as url:
        yield url


def empty_tables(url: str) -> None:
    engine = get_engine(url)
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            # TRUNCATE refuses tables that foreign keys point at unless the checks are off
            # (for this session only); it also restarts AUTO_INCREMENT like RESTART IDENTITY.
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in tables:
                conn.execute(text(f"TRUNCATE TABLE `{table}`"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=BACKENDS)
def db_url(request) -> str:
    """An empty database on each backend in turn."""
    url = request.getfixturevalue(f"{request.param}_database_url")
    empty_tables(url)
    return url


@pytest.fixture
def pg_url(pg_database_url) -> str:
    """An empty PostgreSQL database (for concurrency tests that need row locks)."""
    empty_tables(pg_database_url)
    return pg_database_url


@pytest.fixture
def mariadb_url(mariadb_database_url) -> str:
    """An empty MariaDB database (concurrency tests: InnoDB row locks, SKIP LOCKED)."""
    empty_tables(mariadb_database_url)
    return mariadb_database_url


@pytest.fixture(params=LOCKING_BACKENDS)
def locking_url(request) -> str:
    """An empty database with row locks (FOR UPDATE SKIP LOCKED), on each such backend in turn:
    for the tests that run claims and requests concurrently."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def sqlite_url(sqlite_database_url) -> str:
    empty_tables(sqlite_database_url)
    return sqlite_database_url


@pytest.fixture
def engine(db_url):
    return get_engine(db_url)


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"ordersys_test:{SESSION_ID}:"
    yield prefix
    client = connect(REDIS_URL)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


@pytest.fixture
def redis_resource(redis_prefix) -> Iterator[RedisResource]:
    """Redis on the real server under this session's key prefix, emptied before each test."""
    resource = RedisResource(url=REDIS_URL, key_prefix=redis_prefix)
    client = resource.client()
    for key in client.scan_iter(match=f"{redis_prefix}*", count=1000):
        client.delete(key)
    yield resource


@pytest.fixture
def settings(db_url, redis_prefix, tmp_path, monkeypatch) -> Settings:
    """Settings pointing at this test's database, Redis prefix and a private inbox."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = {
        "ORDERSYS_DATABASE_URL": db_url,
        "ORDERSYS_REDIS_URL": REDIS_URL,
        "ORDERSYS_REDIS_PREFIX": redis_prefix,
        "ORDERSYS_INBOX": str(inbox),
        "ORDERSYS_GATEWAY_SEED": "7",
        "ORDERSYS_NOTIFY_LOG_FILE": str(tmp_path / "notifications.log"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()
