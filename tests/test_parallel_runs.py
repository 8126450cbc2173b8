"""Four workflow runs at once on PostgreSQL, as the sensors start them for a large backlog:
each claims its own batches, nothing is done twice, no run deadlocks another, stock is conserved."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select
from workflow_helpers import BASE_DATE, add_order, add_products, gateway_config, status_counts, stock

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import order_events, order_lines, orders, payment_callbacks
from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import settle_batch

SKUS = {"A": 60, "B": 400, "C": 25, "D": 1000}
RUNS = 4
BATCH = 40


def _run(engine, config, name: str, errors: list) -> None:
    try:
        while True:
            kwargs = {"batch_size": BATCH, "claimant": name, "lease_seconds": 300, "run_id": name}
            reserved = reserve_batch(engine, **kwargs)
            initiated = initiate_batch(engine, config=config, **kwargs)
            settled = settle_batch(engine, config=config, **kwargs)
            if not (reserved.claimed or initiated.claimed or settled.claimed):
                return
    except Exception as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_parallel_runs_share_a_backlog_without_overlap_or_oversell(pg_url):
    engine = get_engine(pg_url)
    skus = list(SKUS)
    with engine.begin() as conn:
        product_ids = add_products(conn, SKUS)
        for n in range(400):  # 1-3 lines over the four products, every order touching shared rows
            lines = [(skus[(n + k) % 4], 1 + (n * 7 + k) % 3) for k in range(1 + n % 3)]
            add_order(conn, f"P-{n:04d}", lines, date=BASE_DATE + timedelta(seconds=n))
    config = gateway_config(approval_rate=0.8, duplicate_rate=0.3)
    errors: list[Exception] = []
    threads = [threading.Thread(target=_run, args=(engine, config, f"run-{i}", errors)) for i in range(RUNS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)

    with engine.connect() as conn:
        counts = status_counts(conn)
        runs_used = conn.execute(select(func.count(func.distinct(order_events.c.run_id)))).scalar()
        # Exactly one terminal event per order, whichever run wrote it.
        terminal_events = conn.execute(
            select(order_events.c.order_id, func.count())
            .where(order_events.c.to_status.in_(["finalized", "failed"])).group_by(order_events.c.order_id)
        ).all()
        unsettled_callbacks = conn.execute(
            select(func.count()).select_from(payment_callbacks).where(payment_callbacks.c.status == "pending")
        ).scalar()
        sold = dict(conn.execute(
            select(order_lines.c.product_id, func.sum(order_lines.c.quantity))
            .join(orders, orders.c.id == order_lines.c.order_id)
            .where(orders.c.status == "finalized").group_by(order_lines.c.product_id)
        ).all())
        after = stock(conn)
    assert set(counts) <= {"finalized", "failed"} and sum(counts.values()) == 400
    assert counts["finalized"] > 50 and counts["failed"] > 20
    assert runs_used > 1  # the work really was shared
    assert len(terminal_events) == 400 and {n for _, n in terminal_events} == {1}
    assert unsettled_callbacks == 0
    for sku, (left, reserved) in after.items():
        assert reserved == 0, sku
        assert SKUS[sku] - left == sold.get(product_ids[sku], 0), sku
