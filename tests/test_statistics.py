"""Fresh planner statistics: a table that changed a lot since its last ANALYZE is analyzed by
the stage, on PostgreSQL, whether or not autovacuum would have (it may be off)."""

from __future__ import annotations

import time

from sqlalchemy import text

from ordersys_pipelines.db import statistics
from ordersys_pipelines.db.engine import get_engine


def _modified_since_analyze(engine, table: str) -> int:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return conn.execute(text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = :t"),
                            {"t": table}).scalar() or 0


def _wait_for_counters(engine, table: str, at_least: int) -> None:
    """A backend reports its table counters about once a second; wait for them (not a timing test)."""
    deadline = time.monotonic() + 30
    while _modified_since_analyze(engine, table) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)


def _analyze_until_counted_out(engine, table: str) -> None:
    """ANALYZE until the table reads no change since: a backend's counters of the rows it wrote
    may be reported after the ANALYZE and would count as changes made since."""
    deadline = time.monotonic() + 30
    while True:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {table}"))
        if _modified_since_analyze(engine, table) == 0 or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _probe_table(engine, name: str, rows: int) -> None:
    """A table of the test's own, with autovacuum off on it (an auto-ANALYZE would reset its
    counters at any moment), counted out after its creation."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(text(f"CREATE TABLE {name} WITH (autovacuum_enabled = off) AS "
                          f"SELECT n AS id, '' AS note FROM generate_series(1, {rows}) n"))
    _wait_for_counters(engine, name, rows)
    _analyze_until_counted_out(engine, name)


def _drop(engine, *names: str) -> None:
    with engine.begin() as conn:
        for name in names:
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


def test_a_table_that_changed_a_lot_is_analyzed_and_then_left_alone(pg_url):
    """Tables of the test's own: the session's other connections may still report counters of
    `orders` or `products` from earlier tests, which would count as changes here."""
    engine = get_engine(pg_url)
    _probe_table(engine, "statistics_changed", 200)
    _probe_table(engine, "statistics_unchanged", 200)
    try:
        with engine.begin() as conn:  # 240 changes, past 50 + 20% of 200; the other table 10
            conn.execute(text("UPDATE statistics_changed SET note = 'changed' WHERE id <= 120"))
            conn.execute(text("UPDATE statistics_changed SET note = 'again' WHERE id <= 120"))
            conn.execute(text("UPDATE statistics_unchanged SET note = 'changed' WHERE id <= 10"))
        _wait_for_counters(engine, "statistics_changed", 240)
        _wait_for_counters(engine, "statistics_unchanged", 10)
        tables = ["statistics_changed", "statistics_unchanged", "no_such_table"]
        assert statistics.refresh(engine, tables) == ["statistics_changed"]
        assert _modified_since_analyze(engine, "statistics_changed") == 0
        assert statistics.refresh(engine, ["statistics_changed"]) == []
    finally:
        _drop(engine, "statistics_changed", "statistics_unchanged")


def test_other_databases_have_nothing_to_refresh(sqlite_url):
    assert statistics.refresh(get_engine(sqlite_url), ["orders"]) == []


def test_orders_are_analyzed_only_once_they_changed_as_much_as_they_hold(pg_url):
    """The orders' share, on a table of the test's own (as above)."""
    engine = get_engine(pg_url)
    _probe_table(engine, "statistics_probe", 200)
    try:
        with engine.begin() as conn:  # 100 changes: past 50 + 20% of 200, short of 50 + 100%
            conn.execute(text("UPDATE statistics_probe SET note = 'changed' WHERE id <= 100"))
        _wait_for_counters(engine, "statistics_probe", 100)
        assert statistics.refresh(engine, ["statistics_probe"], share=statistics.ORDERS_SHARE) == []
        with engine.begin() as conn:  # each row written twice more: 500 changes in all
            conn.execute(text("UPDATE statistics_probe SET note = 'changed again'"))
            conn.execute(text("UPDATE statistics_probe SET note = 'and again'"))
        _wait_for_counters(engine, "statistics_probe", 500)
        assert statistics.refresh(engine, ["statistics_probe"], share=statistics.ORDERS_SHARE) == ["statistics_probe"]
    finally:
        _drop(engine, "statistics_probe")
