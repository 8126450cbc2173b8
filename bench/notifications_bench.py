"""Notification dispatch throughput: batched (the design) against one notification per
transaction (the per-row baseline), same data, same run, on SQLite and PostgreSQL.

    python bench/notifications_bench.py [--count 5000] [--batch-size 200] [--pg-url URL]

Channel: `log` with the logger silenced, so the figures are the database and rendering work;
a real SMTP server adds its own per-message cost on top.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import customers, notifications, order_lines, orders, products
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending
from ordersys_pipelines.domain.notifications.outbox import enqueue_for_orders


def load(url: str, count: int) -> None:
    engine = get_engine(url)
    with engine.begin() as conn:
        for table in ("notifications", "order_lines", "orders", "products", "customers"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(insert(customers), [{"email": f"c{i}@example.com", "name": f"Customer {i}"} for i in range(100)])
        customer_ids = list(conn.execute(select(customers.c.id)).scalars())
        conn.execute(insert(products), [{"sku": f"SKU-{i}", "name": f"Product {i}", "price_cents": 100 + i}
                                        for i in range(50)])
        product_ids = list(conn.execute(select(products.c.id)).scalars())
        conn.execute(insert(orders), [{"order_ref": f"B-{i:06d}", "customer_id": customer_ids[i % 100],
                                       "order_date": datetime(2024, 1, 1), "total_cents": 3 * 150,
                                       "status": "finalized"} for i in range(count)])
        order_ids = list(conn.execute(select(orders.c.id)).scalars())
        conn.execute(insert(order_lines), [
            {"order_id": order_id, "line_no": line, "product_id": product_ids[(order_id + line) % 50],
             "quantity": 1, "unit_price_cents": 150}
            for order_id in order_ids for line in (1, 2, 3)
        ])
        enqueue_for_orders(conn, "order_confirmed", select(orders.c.id))


def measure(url: str, count: int, batch_size: int) -> float:
    load(url, count)
    config = NotifierConfig(channel="log", batch_size=batch_size)
    started = time.perf_counter()
    result = dispatch_pending(get_engine(url), config, claimant=f"bench-{batch_size}")
    seconds = time.perf_counter() - started
    assert result.sent == count, result
    with get_engine(url).connect() as conn:
        assert conn.execute(select(notifications.c.id).where(notifications.c.status != "sent")).first() is None
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--baseline-count", type=int, default=1000,
                        help="notifications for the one-per-transaction baseline (it is slow)")
    parser.add_argument("--pg-url", default=os.environ.get("ORDERSYS_TEST_PG_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    logging.getLogger("ordersys.notifications").addHandler(logging.NullHandler())
    logging.getLogger("ordersys.notifications").propagate = False

    targets: list[tuple[str, str]] = []
    tmp = tempfile.TemporaryDirectory()
    targets.append(("sqlite", f"sqlite:///{Path(tmp.name) / 'bench.db'}"))
    admin = None
    name = f"ordersys_bench_notifications_{os.getpid()}"
    try:
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        targets.append(("postgresql", make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)))
    except Exception as exc:  # no PostgreSQL here: SQLite only
        print(f"PostgreSQL not used: {exc}")
        admin = None
    try:
        print(f"{'backend':<11} {'mode':<34} {'count':>6} {'seconds':>8} {'per second':>11}")
        for backend, url in targets:
            migrate.upgrade(url)
            for mode, count, batch in [
                ("one per transaction (baseline)", args.baseline_count, 1),
                (f"batched, {args.batch_size} per batch", args.count, args.batch_size),
            ]:
                seconds = measure(url, count, batch)
                print(f"{backend:<11} {mode:<34} {count:>6} {seconds:>8.2f} {count / seconds:>11.0f}")
            get_engine(url).dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
