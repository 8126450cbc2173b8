"""Poison rows written straight into the database, past the import's checks, as each backend
lets them be stored (what the stages then meet when they read or write the row)."""

from __future__ import annotations

from sqlalchemy import Connection, text

# What each backend stores that no driver reads back as a datetime: PostgreSQL keeps years
# past 9999 (psycopg refuses them), MariaDB a zero date (accepted with a relaxed sql_mode;
# PyMySQL returns it as a str), SQLite any text.
UNREADABLE_TIMESTAMP = {
    "postgresql": "10000-01-01 04:00:00",
    "mysql": "0000-00-00 00:00:00",
    "sqlite": "10000-01-01 04:00:00",
}
# The same, for a row that must count as due (earlier than now): PostgreSQL's -infinity.
UNREADABLE_PAST = {**UNREADABLE_TIMESTAMP, "postgresql": "-infinity", "sqlite": "0000-00-00 00:00:00"}


def write_raw(conn: Connection, statement: str, **params) -> None:
    """Execute `statement` as written; on MariaDB with the sql_mode relaxed for it alone."""
    if conn.dialect.name in ("mysql", "mariadb"):
        statement = f"SET STATEMENT sql_mode = '' FOR {statement}"
    conn.execute(text(statement), params)


def poison_timestamp(conn: Connection, table: str, column: str, row_id: int, *, past: bool = False) -> str:
    """Set `table.column` of row `row_id` to a timestamp nothing can read; returns the value."""
    backend = "mysql" if conn.dialect.name in ("mysql", "mariadb") else conn.dialect.name
    value = (UNREADABLE_PAST if past else UNREADABLE_TIMESTAMP)[backend]
    write_raw(conn, f"UPDATE {table} SET {column} = :value WHERE id = :row_id", value=value, row_id=row_id)
    return value



def write_without_foreign_keys(engine, statement: str) -> None:
    """Execute `statement` (literal SQL) with the foreign key checks off for it alone: how a
    dangling reference gets into a database (a restore, a hand edit). PostgreSQL: triggers off
    for the transaction (session_replication_role; the tests run as a superuser); MariaDB:
    FOREIGN_KEY_CHECKS for the session, restored; SQLite: the pragma, outside a transaction."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection
            raw.execute("PRAGMA foreign_keys = OFF")
            try:
                raw.execute(statement)
            finally:
                raw.execute("PRAGMA foreign_keys = ON")
            return
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text(statement))
            else:
                conn.execute(text("SET SESSION FOREIGN_KEY_CHECKS = 0"))
                conn.execute(text(statement))
                conn.execute(text("SET SESSION FOREIGN_KEY_CHECKS = 1"))
