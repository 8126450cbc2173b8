"""The callback inbox's lookups use partial indexes (PostgreSQL, SQLite; migration 0008): a
settled callback leaves them, and settlement finds the due ones through them even when the
planner statistics still count every callback pending (settlement no longer ANALYZEs)."""

from __future__ import annotations

from datetime import timedelta

from plan_support import explained
from sqlalchemy import insert, inspect, text

from ordersys_pipelines.db.dialect import is_mysql
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import payment_callbacks
from ordersys_pipelines.domain.payments.callbacks import prune_rejected
from ordersys_pipelines.domain.payments.settlement import lock_due_callbacks

PARTIAL = {"ix_payment_callbacks_pending", "ix_payment_callbacks_rejected", "ix_payment_callbacks_head"}
FULL = {"ix_payment_callbacks_status", "ix_payment_callbacks_payload_kept"}


def _add_callbacks(conn, count: int, status: str = "pending", kept: str = "whole") -> None:
    due = utcnow() - timedelta(minutes=1)
    conn.execute(insert(payment_callbacks), [
        {"event_id": f"evt_{status}_{kept}_{n}", "payload": "{}", "payload_kept": kept, "status": status,
         "available_at": due} for n in range(count)])


def test_partial_indexes_where_the_database_has_them(engine):
    names = {index["name"] for index in inspect(engine).get_indexes("payment_callbacks")}
    if is_mysql(engine):
        assert FULL <= names and not PARTIAL & names
    else:
        assert PARTIAL <= names and not FULL & names


def test_due_callbacks_and_pruning_still_find_their_rows(engine):
    with engine.begin() as conn:
        _add_callbacks(conn, 5, status="applied")
        _add_callbacks(conn, 3)
        _add_callbacks(conn, 4, status="rejected", kept="head")
    with engine.begin() as conn:
        assert len(lock_due_callbacks(conn, limit=10, now=utcnow())) == 3
        assert prune_rejected(conn, keep=1) == 3
        assert conn.execute(text("SELECT count(*) FROM payment_callbacks")).scalar() == 9


def test_the_claim_takes_the_pending_index_with_statistics_from_before_the_settling(pg_url):
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        _add_callbacks(conn, 20_000)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE payment_callbacks"))  # every callback pending, as after a big initiation
    with engine.begin() as conn:
        conn.execute(text("UPDATE payment_callbacks SET status = 'applied' WHERE id % 100 <> 0"))
    with explained(engine, "SELECT payment_callbacks.id") as plans, engine.begin() as conn:
        assert len(lock_due_callbacks(conn, limit=10_000, now=utcnow())) == 200
    assert plans and "ix_payment_callbacks_pending" in plans[0], plans
