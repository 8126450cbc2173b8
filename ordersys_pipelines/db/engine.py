"""Engines for the configured database, one per URL and process."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


@functools.cache
def get_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "checkin", _drop_rowset_tables)
        return engine
    # Server-side defaults (CURRENT_TIMESTAMP) land in naive columns in the session's time
    # zone; pin it to UTC so they agree with utcnow() whatever the server's default zone is.
    options: dict = {}
    if parsed.get_backend_name() == "postgresql":
        # No server-side prepared statements: psycopg prepares a statement run five times, and
        # PostgreSQL may then plan it once for any parameters, knowing neither the size of a
        # batch's id array nor its values (`= ANY` is then not hashed: 0.3-0.6 s instead of 7 ms
        # for 10,000 orders' lines). Unprepared, each is planned for its values; the statements
        # that matter run once per batch, where planning is a millisecond. (Not plan_cache_mode:
        # that would replan the foreign keys' checks, which run per row.)
        # No JIT: a batch's statements are short, and the planner's estimate of a correlated
        # subquery per row (a notification's payment state) crossed jit_above_cost, so loading
        # 1,000 notifications spent 40-670 ms compiling for 10 ms of work.
        options["connect_args"] = {"options": "-c timezone=UTC -c jit=off", "prepare_threshold": None}
    elif parsed.get_backend_name() in ("mysql", "mariadb"):
        options["connect_args"] = {
            "init_command": "SET time_zone = '+00:00'",
            "charset": "utf8mb4",
            # The import bulk-loads each chunk with LOAD DATA LOCAL INFILE (domain.imports.load).
            "local_infile": True,
        }
        # InnoDB defaults to REPEATABLE READ; the claim and merge statements are written for
        # PostgreSQL's READ COMMITTED (each statement sees what committed before it began).
        options["isolation_level"] = "READ COMMITTED"
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, **options)
        event.listen(engine, "handle_error", _check_violation_is_integrity_error)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, **options)


# A failed CHECK constraint: MariaDB's ER_CONSTRAINT_FAILED and MySQL 8's
# ER_CHECK_CONSTRAINT_VIOLATED. PyMySQL reports both as OperationalError; every other backend
# raises IntegrityError, which is what the callers catch.
_CHECK_VIOLATIONS = {4025, 3819}


def _check_violation_is_integrity_error(context) -> exc.IntegrityError | None:
    orig = context.original_exception
    if getattr(orig, "args", None) and orig.args[0] in _CHECK_VIOLATIONS:
        return exc.IntegrityError(context.statement, context.parameters, orig)
    return None


# Execution option of the connections `reading()` hands out.
_READ_ONLY = "ordersys_read_only"


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for queries only (sensors, status, KPI reads). On SQLite its transactions
    begin DEFERRED: in WAL mode a reader sees a snapshot and never waits for the write lock, so
    a long write (a large file's merge) does not hold up a sensor's look or `ordersys status`,
    and a long read (a year of KPIs) does not hold up the workflow. Elsewhere a plain connection."""
    with engine.connect() as conn:
        conn.execution_options(**{_READ_ONLY: True})
        yield conn


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own transaction handling defers BEGIN; a writer takes the write lock at BEGIN
    # instead, so concurrent writers queue on busy_timeout rather than fail when a deferred
    # transaction cannot upgrade to a write (SQLITE_BUSY_SNAPSHOT is not retried).
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _drop_rowset_tables(dbapi_connection, _record) -> None:
    """Temporary tables of db.rowsets live until the connection is handed back."""
    if dbapi_connection is None:
        return
    cursor = dbapi_connection.cursor()
    names = [row[0] for row in cursor.execute(
        "SELECT name FROM sqlite_temp_master WHERE type = 'table' AND name LIKE 'rowset\\_%' ESCAPE '\\'"
    )]
    for name in names:
        cursor.execute(f'DROP TABLE temp."{name}"')
    cursor.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def is_mysql(engine_or_connection) -> bool:
    """MySQL or MariaDB (SQLAlchemy names both dialects "mysql" for a mysql:// URL)."""
    return engine_or_connection.dialect.name in ("mysql", "mariadb")
