"""transition() as one statement (PostgreSQL) and as a check plus one statement per table
(MariaDB, SQLite): the same rows either way, and a refused set changes nothing."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select, text, update
from workflow_helpers import add_one_unit_orders, add_order, add_products

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import notifications, order_events, orders
from ordersys_pipelines.domain.orders.states import IllegalTransition, transition


def _orders(conn):
    return {row.order_ref: (row.status, row.status_reason, row.payment_ref, row.claimed_by)
            for row in conn.execute(select(orders))}


def test_events_and_notifications_come_from_the_new_state(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)], status="awaiting_payment")
        b = add_order(conn, "O-2", [("A", 1)], status="awaiting_payment")
        moved = transition(conn, [b, a], "failed", {a: "declined: card", b: "declined: funds"}, "run-1",
                           expected_from="awaiting_payment", notify=("payment_failed", "order_failed"))
        assert moved == 2
        events = conn.execute(select(order_events.c.order_id, order_events.c.from_status, order_events.c.to_status,
                                     order_events.c.reason, order_events.c.run_id)).all()
        sent = conn.execute(select(notifications.c.order_id, notifications.c.type, notifications.c.reason,
                                   notifications.c.recipient, notifications.c.dedup_key, notifications.c.status)
                            .order_by(notifications.c.id)).all()
    assert sorted(events) == [(a, "awaiting_payment", "failed", "declined: card", "run-1"),
                              (b, "awaiting_payment", "failed", "declined: funds", "run-1")]
    # The reason is the one just written, as if the outbox had been written after the move.
    assert [(n.order_id, n.type, n.reason, n.dedup_key, n.status) for n in sent] == [
        (a, "payment_failed", "declined: card", f"order:{a}:payment_failed", "pending"),
        (b, "payment_failed", "declined: funds", f"order:{b}:payment_failed", "pending"),
        (a, "order_failed", "declined: card", f"order:{a}:order_failed", "pending"),
        (b, "order_failed", "declined: funds", f"order:{b}:order_failed", "pending"),
    ]
    assert all(n.recipient for n in sent)


def test_a_notification_already_queued_is_not_queued_twice(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)])
        transition(conn, [a], "reserved", None, "run-1", notify=("order_failed",))
        transition(conn, [a], "failed", "gone", "run-2", notify=("order_failed",))
        rows = conn.execute(select(notifications.c.type, notifications.c.reason)).all()
    assert rows == [("order_failed", None)]


def test_per_order_columns_and_a_claim_in_the_same_write(engine):
    until = datetime(2030, 1, 1)
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)], status="reserved")
        b = add_order(conn, "O-2", [("A", 1)], status="reserved")
        transition(conn, [a, b], "awaiting_payment", {a: "pay a", b: "pay b"}, "run-1", expected_from="reserved",
                   set_columns={"payment_ref": {a: "pay_a", b: "pay_b"}}, claim_for=("run-1", until))
        assert _orders(conn) == {"O-1": ("awaiting_payment", "pay a", "pay_a", "run-1"),
                                 "O-2": ("awaiting_payment", "pay b", "pay_b", "run-1")}


def test_a_refused_set_changes_nothing_and_the_transaction_goes_on(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)])
        b = add_order(conn, "O-2", [("A", 1)], status="finalized")
        with pytest.raises(IllegalTransition, match="O-2: cannot go from finalized to failed"):
            transition(conn, [a, b], "failed", "x", "run-1", notify=("order_failed",))
        with pytest.raises(ValueError, match=r"unknown order id\(s\): \[999999\]"):
            transition(conn, [a, 999_999], "failed", "x", "run-1", notify=("order_failed",))
        with pytest.raises(IllegalTransition, match="created to finalized"):
            transition(conn, [a], "finalized", None, "run-1", expected_from="created")
        assert conn.execute(select(order_events)).all() == []
        assert conn.execute(select(notifications)).all() == []
        assert _orders(conn)["O-1"] == ("created", None, None, None)
        # The same transaction still works: the refusal was undone on its own.
        assert transition(conn, [a], "failed", "x", "run-1", notify=("order_failed",)) == 1
    with engine.connect() as conn:
        assert _orders(conn)["O-1"][0] == "failed"
        assert conn.execute(select(notifications.c.type)).scalars().all() == ["order_failed"]


def test_an_unknown_notification_type_is_refused_before_anything_changes(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)])
        with pytest.raises(ValueError, match="unknown order notification type 'order_teleported'"):
            transition(conn, [a], "failed", "x", "run-1", notify=("order_teleported",))
        assert _orders(conn)["O-1"][0] == "created"


def test_rows_inside_a_batchs_id_range_but_outside_the_batch_are_neither_waited_for_nor_touched(locking_url):
    """A batch of 150 orders is moved by its ids' range (db.rowsets.in_ids). Two orders in that
    range are not in it: one locked by another transaction (an uncommitted change), one left in a
    state the move does not allow (a poison row written straight into the database). The move
    neither waits for the first nor refuses because of the second, and leaves both as they are."""
    engine = get_engine(locking_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 1_000})
        ids = add_one_unit_orders(conn, 152, "A")
        locked, poisoned = ids[50], ids[100]
        conn.execute(update(orders).where(orders.c.id == poisoned).values(status="no such state"))
    batch = [i for i in ids if i not in (locked, poisoned)]
    with engine.connect() as holder:
        holder.execute(update(orders).where(orders.c.id == locked).values(status_reason="held"))  # not committed
        with engine.connect() as conn:
            # A wait for the held row would fail the move after 3 s instead of hanging the test.
            wait, seconds = (("lock_timeout", "'3s'") if conn.dialect.name == "postgresql"
                             else ("innodb_lock_wait_timeout", "3"))
            conn.execute(text(f"SET SESSION {wait} = {seconds}"))
            conn.commit()
            try:
                with conn.begin():
                    assert transition(conn, batch, "reserved", None, "run-1", expected_from="created") == len(batch)
            finally:
                conn.execute(text(f"SET SESSION {wait} = DEFAULT"))
                conn.commit()
        holder.rollback()
    with engine.connect() as conn:
        rows = dict(conn.execute(select(orders.c.id, orders.c.status)).all())
        events = conn.execute(select(order_events.c.order_id)).scalars().all()
    assert {i for i, status in rows.items() if status == "reserved"} == set(batch)
    assert (rows[locked], rows[poisoned]) == ("created", "no such state")
    assert sorted(events) == sorted(batch)
