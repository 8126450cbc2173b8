"""The PostgreSQL plans of the statements a block runs, for tests of which index a lookup takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event


@contextmanager
def explained(engine: Engine, statement_start: str) -> Iterator[list[str]]:
    """Yield a list that fills with the EXPLAIN of each statement starting with `statement_start`."""
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith(statement_start):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(engine, "before_cursor_execute", explain)
