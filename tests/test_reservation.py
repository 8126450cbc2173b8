"""Reservation: all-or-nothing per order, FIFO, clear reasons, eligibility, claims."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select, update
from workflow_helpers import (
    BASE_DATE,
    add_import_file,
    add_order,
    add_products,
    gateway_config,
    statuses,
    stock,
)

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications, orders, products
from ordersys_pipelines.domain.orders.reservation import allocate, reserve_batch
from ordersys_pipelines.domain.payments.initiation import initiate_batch


def _reserve(engine, batch_size: int = 100, run: str = "run-1"):
    return reserve_batch(engine, batch_size=batch_size, claimant=run, lease_seconds=60, run_id=run)


def test_allocation_is_fifo_and_a_failed_order_consumes_nothing():
    # Order 1 needs 5 of P (only 4): it fails and must leave all 4 for orders 2 and 3.
    result = allocate([1, 2, 3], {1: {10: 5, 11: 1}, 2: {10: 3}, 3: {10: 1, 11: 1}}, {10: 4, 11: 1}, {10: "P", 11: "Q"})
    assert result.reserved == [2, 3]
    assert result.failed == {1: "insufficient stock: P needed 5, available 4"}
    assert result.taken == {10: 4, 11: 1}


def test_allocation_names_unknown_products_and_orders_without_lines():
    result = allocate([1, 2], {1: {99: 2, 10: 1}}, {10: 5}, {10: "P"})
    assert result.reserved == [] and result.taken == {}
    assert result.failed == {1: "insufficient stock: unknown product #99 needed 2",
                             2: "no order lines: nothing to reserve"}


def test_all_or_nothing_per_order_with_each_short_sku_named(engine):
    with engine.begin() as conn:
        add_products(conn, {"APPLE": 5, "PEAR": 1, "PLUM": 0})
        add_order(conn, "O-1", [("APPLE", 2), ("PEAR", 2), ("PLUM", 1)])
        add_order(conn, "O-2", [("APPLE", 5)], date=BASE_DATE + timedelta(hours=1))
    result = _reserve(engine)
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "failed", "O-2": "reserved"}
        assert stock(conn) == {"APPLE": (5, 5), "PEAR": (1, 0), "PLUM": (0, 0)}
        reason = conn.execute(select(orders.c.status_reason).where(orders.c.order_ref == "O-1")).scalar()
        sent = conn.execute(select(notifications.c.type, notifications.c.reason)).all()
    assert reason == "insufficient stock: PEAR needed 2, available 1; PLUM needed 1, available 0"
    assert sent == [("order_failed", reason)]
    assert result.failed_by_reason() == {"insufficient stock": 1}


def test_oldest_orders_first_by_date_then_ref(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 2})
        add_order(conn, "O-C", [("A", 1)], date=BASE_DATE)
        add_order(conn, "O-B", [("A", 1)], date=BASE_DATE)
        add_order(conn, "O-A", [("A", 1)], date=BASE_DATE + timedelta(days=1))
    _reserve(engine)
    with engine.connect() as conn:
        assert statuses(conn) == {"O-B": "reserved", "O-C": "reserved", "O-A": "failed"}


def test_two_lines_of_one_product_count_together(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 3})
        add_order(conn, "O-1", [("A", 2), ("A", 2)])
        add_order(conn, "O-2", [("A", 3)], date=BASE_DATE + timedelta(hours=1))
    _reserve(engine)
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "failed", "O-2": "reserved"}
        assert "A needed 4, available 3" in conn.execute(
            select(orders.c.status_reason).where(orders.c.order_ref == "O-1")).scalar()


def test_only_orders_of_completed_imports_or_without_import_are_taken(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        done, busy = add_import_file(conn, "completed"), add_import_file(conn, "staged")
        add_order(conn, "O-DONE", [("A", 1)], import_file_id=done)
        add_order(conn, "O-BUSY", [("A", 1)], import_file_id=busy)
        add_order(conn, "O-NONE", [("A", 1)])
    result = _reserve(engine)
    assert result.claimed == 2
    with engine.connect() as conn:
        assert statuses(conn) == {"O-DONE": "reserved", "O-BUSY": "created", "O-NONE": "reserved"}


def test_batches_respect_the_batch_size(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 100})
        for i in range(7):
            add_order(conn, f"O-{i}", [("A", 1)], date=BASE_DATE + timedelta(minutes=i))
    assert len(_reserve(engine, batch_size=3).reserved) == 3
    with engine.connect() as conn:
        assert [r for r, s in sorted(statuses(conn).items()) if s == "reserved"] == ["O-0", "O-1", "O-2"]


def test_orders_under_a_live_claim_wait_for_its_lease(engine):
    """Orders a run has claimed (a stamp with a lease) and abandoned are left alone until the
    lease lapses; then another run takes them."""
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        add_order(conn, "O-1", [("A", 1)])
        add_order(conn, "O-2", [("A", 1)])
        conn.execute(update(orders).values(claimed_by="dead-run", claim_expires_at=utcnow() + timedelta(seconds=60)))
    assert _reserve(engine, run="run-2").claimed == 0
    with engine.begin() as conn:
        conn.execute(update(orders).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert len(_reserve(engine, run="run-2").reserved) == 2
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "reserved", "O-2": "reserved"}
        assert stock(conn) == {"A": (10, 2)}
        # The reserving run holds a claim on them for its next step (starting the payments).
        claimed = conn.execute(select(orders.c.claimed_by, orders.c.claim_expires_at)).all()
    assert {c for c, _ in claimed} == {"run-2"} and all(e > utcnow() for _, e in claimed)


def test_a_run_that_dies_after_reserving_leaves_its_payments_to_others_after_the_lease(engine):
    config = gateway_config()
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        add_order(conn, "O-1", [("A", 1)])
    _reserve(engine, run="dead-run")  # reserved and claimed; the run dies before starting the payment
    run2 = dict(config=config, batch_size=10, claimant="run-2", lease_seconds=60, run_id="run-2")
    assert initiate_batch(engine, **run2).claimed == 0
    with engine.begin() as conn:
        conn.execute(update(orders).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert len(initiate_batch(engine, **run2).initiated) == 1
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "awaiting_payment"}
        assert conn.execute(select(orders.c.claimed_by)).scalar() is None


@pytest.mark.parametrize("backend", ["pg_url", "mariadb_url"])
def test_stock_lowered_while_a_batch_is_decided_is_decided_again_under_the_locks(request, backend):
    """The allocation reads stock without locks and locks the products it takes just before
    commit. An inventory update that lowers the stock in between (here: committed from another
    connection exactly then) must not oversell: the batch is decided again on the locked rows."""
    engine = get_engine(request.getfixturevalue(backend))
    with engine.begin() as conn:
        add_products(conn, {"A": 5})
        add_order(conn, "O-1", [("A", 2)], date=BASE_DATE)
        add_order(conn, "O-2", [("A", 3)], date=BASE_DATE + timedelta(seconds=1))
    lowered = []

    def lower_stock_before_the_lock(conn, cursor, statement, parameters, context, executemany):
        if not lowered and "FOR UPDATE" in statement and "products" in statement.split("FROM", 1)[-1][:40]:
            lowered.append(True)
            with engine.connect() as side:  # another connection of the pool, committed at once
                side.execute(update(products).values(stock=3))
                side.commit()

    event.listen(engine, "before_cursor_execute", lower_stock_before_the_lock)
    try:
        result = _reserve(engine)
    finally:
        event.remove(engine, "before_cursor_execute", lower_stock_before_the_lock)
    assert lowered
    assert sorted(result.failed.values()) == ["insufficient stock: A needed 3, available 1"]
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "reserved", "O-2": "failed"}
        assert stock(conn) == {"A": (3, 2)}
