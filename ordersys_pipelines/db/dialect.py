"""The few statements that differ between PostgreSQL, MySQL/MariaDB and SQLite, in one place.

Domain code writes one statement per concept and lets these helpers adapt it:

- row locks: PostgreSQL and InnoDB lock rows (`FOR UPDATE [SKIP LOCKED]`); SQLite has one
  writer at a time (BEGIN IMMEDIATE), which already serializes what the locks protect.
- "insert unless the key exists": `ON CONFLICT DO NOTHING` / `INSERT IGNORE`.
- UPDATE … RETURNING: MariaDB has RETURNING on INSERT and DELETE only, so the rows are
  locked and selected first, updated by id, then read back, in the same transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from sqlalchemy import Column, Connection, Engine, Row, Select, Table, Update, func, select, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def is_mysql(conn: Connection) -> bool:
    """MySQL or MariaDB (SQLAlchemy calls a mysql:// connection to MariaDB "mysql" too)."""
    return conn.dialect.name in ("mysql", "mariadb")


def lock_rows(conn: Connection, statement: Select, *, skip_locked: bool = False,
              key_share: bool = False, of=None) -> Select:
    """`statement … FOR UPDATE` where the database has row locks.

    `key_share` (PostgreSQL's FOR KEY SHARE, which lets others update non-key columns) and `of`
    have no MariaDB equivalent: there the rows of every joined table are locked for update,
    which is stricter, never weaker."""
    if conn.dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=skip_locked, key_share=key_share, of=of)
    if is_mysql(conn):
        return statement.with_for_update(skip_locked=skip_locked)
    return statement


def dialect_insert(conn: Connection, table: Table):
    """The dialect's INSERT (it knows its upsert clauses)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if is_mysql(conn):
        return mysql.insert(table)
    return sqlite.insert(table)


def insert_new(conn: Connection, table: Table, key: Sequence[str | Column]) -> Insert:
    """INSERT that skips rows whose unique `key` is already taken. MySQL has no conflict target:
    INSERT IGNORE skips a row that collides on any unique key (the callers insert validated rows,
    so the other errors IGNORE would also downgrade do not arise)."""
    if is_mysql(conn):
        return mysql.insert(table).prefix_with("IGNORE")
    return dialect_insert(conn, table).on_conflict_do_nothing(index_elements=list(key))


def upsert(conn: Connection, table: Table, rows: list[dict], key: Sequence[str | Column],
           update_columns: Sequence[str]) -> Insert:
    """INSERT `rows`; where the unique `key` exists, set `update_columns` to the new values.
    ON DUPLICATE KEY has no conflict target: only use it for tables whose one unique key
    besides the primary key is `key`."""
    statement = dialect_insert(conn, table).values(rows)
    if is_mysql(conn):
        return statement.on_duplicate_key_update({c: statement.inserted[c] for c in update_columns})
    return statement.on_conflict_do_update(
        index_elements=list(key), set_={c: statement.excluded[c] for c in update_columns}
    )


def update_returning(conn: Connection, statement: Update, table: Table, *columns) -> Sequence[Row]:
    """Execute `statement` (an UPDATE of `table`) and return `columns` of the rows it changed."""
    if conn.dialect.update_returning:
        return conn.execute(statement.returning(*columns)).all()
    # Find the rows without locks, then lock them by primary key with the condition checked again:
    # InnoDB locks every row a locking read scans, and a scan of a secondary index would wait on
    # (and deadlock with) rows other transactions hold that do not even match.
    seen = list(conn.execute(select(table.c.id).where(statement.whereclause)).scalars())
    if not seen:
        return []
    ids = list(conn.execute(
        lock_rows(conn, select(table.c.id).where(table.c.id.in_(seen), statement.whereclause))
    ).scalars())
    if not ids:
        return []
    conn.execute(statement.where(table.c.id.in_(ids)))
    return conn.execute(select(*columns).where(table.c.id.in_(ids))).all()


LOCK_WAIT_SECONDS = 600


@contextlib.contextmanager
def exclusive_transaction(engine: Engine, key: int) -> Iterator[Connection]:
    """`engine.begin()` that runs alone among the transactions using the same `key`, until its
    commit: a transaction-scoped advisory lock on PostgreSQL; on MySQL GET_LOCK, which belongs to
    the session, so it is taken before the transaction and released after the commit (released
    earlier, the next transaction could start while this one still holds its row locks, and its
    SKIP LOCKED would pass over rows this one is about to give back). SQLite's single writer
    already serializes."""
    with engine.connect() as conn:
        if not is_mysql(conn):
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(key)))
                yield conn
            return
        # GET_LOCK names are server-wide: qualify by the database so databases do not contend.
        name = text("CONCAT(DATABASE(), ':', :key)").bindparams(key=f"{key:x}")
        granted = conn.execute(select(func.get_lock(name, LOCK_WAIT_SECONDS))).scalar()
        conn.commit()
        if granted != 1:
            raise TimeoutError(f"lock {key:x} not granted within {LOCK_WAIT_SECONDS} s")
        try:
            with conn.begin():
                yield conn
        finally:
            conn.execute(select(func.release_lock(name)))
            conn.commit()
