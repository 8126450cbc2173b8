"""Workflow benchmark: created → finalized on PostgreSQL, set-based with 1, 2 and 4 parallel runs,
against the old way (one order per transaction, SELECT … FOR UPDATE) on a 10k-order subset.

The orders are generated with set-based SQL (generate_series) straight into the tables the CSV
import fills — the import has its own benchmark; this one measures the workflow. Each parallel
run is a process of its own, as the runs the sensors start are, calling the same domain
functions the `order_workflow` and `payment_settlement` ops call (reserve_batch, initiate_batch,
settle_batch) in a loop until nothing is left; claims keep the runs apart. Every parallelism
level gets a fresh backlog of `--orders` orders (3 or 4 lines each) with the same stock.
Everything happens in a database of its own (unique name, dropped at the end).

    python bench/workflow_bench.py [--orders 300000] [--parallel 1,2,4] [--subset 10000] [--batch-size 10000]

The one-order-per-transaction baseline runs on one connection, as one worker of the old queue did.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.config import GatewayConfig
from ordersys_pipelines.domain.payments.gateway import callback_payload, decide, new_event_id, new_payment_ref
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import settle_batch
from ordersys_pipelines.domain.payments.signing import sign, verify

ADMIN_URL = os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PRODUCTS = 2000
CONFIG = GatewayConfig(secret="bench-secret", approval_rate=0.97, duplicate_rate=0.05, seed=1)


def generate(engine, orders: int, first_ref: int, import_status: str) -> None:
    """`orders` orders of 3 or 4 lines (every third has 4: 1M lines for 300k orders)."""
    with engine.begin() as conn:
        file_id = conn.execute(text(
            "INSERT INTO import_files (content_hash, original_name, status) VALUES (:h, 'generated.csv', :s) "
            "RETURNING id"), {"h": uuid.uuid4().hex, "s": import_status}).scalar()
        conn.execute(text(
            "INSERT INTO orders (order_ref, customer_id, order_date, status, total_cents, import_file_id) "
            "SELECT 'B-' || lpad(i::text, 8, '0'), 1 + i % 10000, "
            "       timestamp '2024-01-01' + (i || ' seconds')::interval, 'created', 0, :file "
            "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS i"), {"file": file_id, "a": first_ref, "b": first_ref + orders - 1})
        conn.execute(text(
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents) "
            "SELECT o.id, n, 1 + (o.id * 31 + n * 17) % CAST(:p AS int), 1 + (o.id + n) % 3, 100 + (o.id * 7 + n) % 900 "
            "FROM orders o CROSS JOIN generate_series(1, 4) AS n "
            "WHERE o.import_file_id = :file AND n <= 3 + (o.id % 3 = 0)::int"), {"p": PRODUCTS, "file": file_id})
        conn.execute(text(
            "UPDATE orders o SET total_cents = t.total FROM (SELECT order_id, SUM(quantity * unit_price_cents) AS total "
            "FROM order_lines GROUP BY order_id) t WHERE t.order_id = o.id AND o.import_file_id = :file"),
            {"file": file_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE orders"))
        conn.execute(text("VACUUM ANALYZE order_lines"))


def setup(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (email, name) SELECT 'c' || i || '@example.com', 'Customer ' || i "
                          "FROM generate_series(1, 10000) AS i"))
        # Enough stock for most orders; every 50th product is scarce, so some orders fail reservation.
        conn.execute(text("INSERT INTO products (sku, name, price_cents, stock) SELECT 'SKU-' || i, 'Product ' || i, "
                          "100, 0 FROM generate_series(1, CAST(:p AS int)) AS i"), {"p": PRODUCTS})


def fresh_backlog(engine, orders: int, first_ref: int) -> None:
    """`orders` new created orders and the same stock as every other level had."""
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE products SET stock = {STOCK}"))
    generate(engine, orders, first_ref, "completed")


STOCK = "CASE WHEN id % 50 = 0 THEN 300 ELSE 2000 END"


def set_based(url: str, batch_size: int) -> dict:
    """One run's loop: batches until nothing is left (other runs may be claiming at the same time)."""
    engine = get_engine(url)
    phases = {"reserve": 0.0, "initiate": 0.0, "settle": 0.0}
    counts = {"reserved": 0, "failed": 0, "initiated": 0, "finalized": 0, "declined": 0, "rejected": 0}
    run = "bench-" + uuid.uuid4().hex[:8]
    started = time.time()
    while True:
        t0 = time.perf_counter()
        reserved = reserve_batch(engine, batch_size=batch_size, claimant=run, lease_seconds=600, run_id=run)
        t1 = time.perf_counter()
        initiated = initiate_batch(engine, config=CONFIG, batch_size=batch_size, claimant=run, lease_seconds=600,
                                   run_id=run)
        t2 = time.perf_counter()
        settled = settle_batch(engine, config=CONFIG, batch_size=batch_size, claimant=run, lease_seconds=600,
                               run_id=run)
        t3 = time.perf_counter()
        phases["reserve"] += t1 - t0
        phases["initiate"] += t2 - t1
        phases["settle"] += t3 - t2
        counts["reserved"] += len(reserved.reserved)
        counts["failed"] += len(reserved.failed)
        counts["initiated"] += len(initiated.initiated)
        counts["finalized"] += len(settled.finalized)
        counts["declined"] += len(settled.declined)
        counts["rejected"] += len(settled.rejected)
        if not (reserved.claimed or initiated.claimed or settled.claimed):
            engine.dispose()
            return {"phases": phases, "counts": counts, "started": started, "ended": time.time()}


def parallel(url: str, batch_size: int, runs: int) -> dict:
    """`runs` processes working one backlog at once; wall time from the first start to the last end."""
    with ProcessPoolExecutor(runs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(set_based, [url] * runs, [batch_size] * runs))
    total = {key: {k: sum(p[key][k] for p in parts) for k in parts[0][key]} for key in ("phases", "counts")}
    total["seconds"] = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    return total


def check_terminal(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM orders WHERE status NOT IN ('finalized', 'failed')")).scalar()
        unbalanced = conn.execute(text("SELECT count(*) FROM products WHERE reserved <> 0 OR stock < 0")).scalar()
    return left, unbalanced


def per_order(engine, order_ids: list[int]) -> dict:
    """The old system's way: every order through every stage in a transaction of its own, with
    row locks taken one by one (SELECT … FOR UPDATE) and one statement per line."""
    run = "bench-per-order"
    counts = {"finalized": 0, "failed": 0}
    for order_id in order_ids:
        with engine.begin() as conn:  # reserve
            order = conn.execute(text("SELECT id, order_ref, status FROM orders WHERE id = :id FOR UPDATE"),
                                 {"id": order_id}).one()
            lines = conn.execute(text("SELECT product_id, quantity FROM order_lines WHERE order_id = :id ORDER BY "
                                      "product_id"), {"id": order_id}).all()
            fits = True
            for line in lines:
                product = conn.execute(text("SELECT stock, reserved FROM products WHERE id = :p FOR UPDATE"),
                                       {"p": line.product_id}).one()
                fits &= product.stock - product.reserved >= line.quantity
            new_status = "reserved" if fits else "failed"
            if fits:
                for line in lines:
                    conn.execute(text("UPDATE products SET reserved = reserved + :q WHERE id = :p"),
                                 {"q": line.quantity, "p": line.product_id})
            conn.execute(text("UPDATE orders SET status = :s, status_changed_at = now() WHERE id = :id"),
                         {"s": new_status, "id": order_id})
            conn.execute(text("INSERT INTO order_events (order_id, from_status, to_status, run_id) "
                              "VALUES (:id, 'created', :s, :run)"), {"id": order_id, "s": new_status, "run": run})
        if not fits:
            counts["failed"] += 1
            continue
        with engine.begin() as conn:  # initiate payment
            order = conn.execute(text("SELECT id, order_ref, total_cents FROM orders WHERE id = :id FOR UPDATE"),
                                 {"id": order_id}).one()
            ref = new_payment_ref(CONFIG, order.order_ref)
            decision = decide(CONFIG, ref)
            now = utcnow()
            payload = callback_payload(new_event_id(CONFIG, ref), ref, decision.approved, order.total_cents,
                                       decision.reason, now)
            conn.execute(text("INSERT INTO gateway_calls (kind, reference, payment_ref, amount_cents, outcome) "
                              "VALUES ('payment', :r, :r, :a, :o)"),
                         {"r": ref, "a": order.total_cents, "o": "approved" if decision.approved else "declined"})
            conn.execute(text("UPDATE orders SET payment_ref = :r, status = 'awaiting_payment' WHERE id = :id"),
                         {"r": ref, "id": order_id})
            conn.execute(text("INSERT INTO order_events (order_id, from_status, to_status, run_id) "
                              "VALUES (:id, 'reserved', 'awaiting_payment', :run)"), {"id": order_id, "run": run})
            event_id = json.loads(payload)["event_id"]
            conn.execute(text("INSERT INTO payment_callbacks (event_id, payment_ref, payload, signature, signed_at) "
                              "VALUES (:e, :r, :p, :s, :t)"),
                         {"e": event_id, "r": ref, "p": payload.decode(),
                          "s": sign(payload, CONFIG.secret, int(time.time())), "t": int(time.time())})
        with engine.begin() as conn:  # settle the callback (found by its event id, as a webhook worker would)
            callback = conn.execute(text("SELECT id, payload, signature FROM payment_callbacks WHERE event_id = :e "
                                         "AND status = 'pending' FOR UPDATE"), {"e": event_id}).one()
            verify(callback.payload.encode(), callback.signature, CONFIG.secret, 300)
            event = json.loads(callback.payload)
            order = conn.execute(text("SELECT id, total_cents FROM orders WHERE payment_ref = :r FOR UPDATE"),
                                 {"r": ref}).one()
            approved = event["status"] == "approved" and event["amount_cents"] == order.total_cents
            for line in lines:
                conn.execute(text("SELECT id FROM products WHERE id = :p FOR UPDATE"), {"p": line.product_id})
                conn.execute(text("UPDATE products SET stock = stock - :sold, reserved = reserved - :q WHERE id = :p"),
                             {"sold": line.quantity if approved else 0, "q": line.quantity, "p": line.product_id})
            final = "finalized" if approved else "failed"
            conn.execute(text("UPDATE orders SET status = :s, status_changed_at = now() WHERE id = :id"),
                         {"s": final, "id": order_id})
            conn.execute(text("INSERT INTO order_events (order_id, from_status, to_status, run_id) "
                              "VALUES (:id, 'awaiting_payment', :s, :run)"), {"id": order_id, "s": final, "run": run})
            for kind in (("order_confirmed", "payment_succeeded") if approved else ("payment_failed", "order_failed")):
                conn.execute(text("INSERT INTO notifications (order_id, customer_id, type, dedup_key) "
                                  "SELECT id, customer_id, CAST(:k AS text), 'order:' || id || ':' || CAST(:k AS text) FROM orders WHERE id = :id"),
                             {"k": kind, "id": order_id})
            conn.execute(text("UPDATE payment_callbacks SET status = 'applied', processed_at = now() WHERE id = :id"),
                         {"id": callback.id})
        counts[final if approved else "failed"] += 1
    return counts


def main() -> None:
    # A terminated benchmark still drops its database (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--parallel", default="1,2,4", help="parallel runs per level, comma-separated")
    args = parser.parse_args()

    name = f"ordersys_bench_workflow_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        with admin.connect() as conn:
            # An OLTP setting: JIT compilation costs more than it saves on these short statements.
            conn.execute(text(f'ALTER DATABASE "{name}" SET jit = off'))
        engine = get_engine(url)
        setup(engine)
        levels = [int(n) for n in args.parallel.split(",")]
        rates = {}
        for level, runs in enumerate(levels):
            t0 = time.perf_counter()
            fresh_backlog(engine, args.orders, 1 + level * args.orders)
            print(f"generated {args.orders:,} orders in {time.perf_counter() - t0:.1f} s")
            result = parallel(url, args.batch_size, runs)
            seconds = result["seconds"]
            rates[runs] = args.orders / seconds
            c, p = result["counts"], result["phases"]
            print(f"set-based, {runs} parallel run(s), batch {args.batch_size:,}: {args.orders:,} orders in "
                  f"{seconds:.1f} s = {rates[runs]:,.0f} orders/s  [summed over runs: reserve {p['reserve']:.1f} s, "
                  f"initiate {p['initiate']:.1f} s, settle {p['settle']:.1f} s]")
            left, unbalanced = check_terminal(engine)
            print(f"  reserved {c['reserved']:,} (failed {c['failed']:,}), finalized {c['finalized']:,}, "
                  f"declined {c['declined']:,}, callbacks rejected {c['rejected']:,}; orders not terminal: {left}; "
                  f"products with reserved stock left or negative stock: {unbalanced}")
        best = max(rates.values())

        # The old way on a fresh 10k subset (stock topped up so the work mix is the same).
        fresh_backlog(engine, args.subset, 1 + len(levels) * args.orders)
        with engine.begin() as conn:
            ids = list(conn.execute(text("SELECT id FROM orders WHERE status = 'created' ORDER BY order_date, order_ref"))
                       .scalars())
        t0 = time.perf_counter()
        old = per_order(engine, ids)
        old_seconds = time.perf_counter() - t0
        old_rate = len(ids) / old_seconds
        print(f"one order per transaction: {len(ids):,} orders in {old_seconds:.1f} s = {old_rate:,.0f} orders/s "
              f"(finalized {old['finalized']:,}, failed {old['failed']:,})")
        for runs, rate in rates.items():
            print(f"ratio set-based ({runs} run(s)) / per-order: {rate / old_rate:.1f}x")
        print(f"best: {best:,.0f} orders/s (targets: >= 10,000 orders/s: {'met' if best >= 10_000 else 'MISSED'}; "
              f">= 20x: {'met' if best / old_rate >= 20 else 'MISSED'}; {os.cpu_count()} CPU cores)")
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
