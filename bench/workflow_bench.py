"""Workflow benchmark: created → terminal (reserve, initiate, settle) with 1 and 2 parallel runs,
the code of this checkout next to a baseline git ref measured in the same invocation.

Each measurement is a child process of its own with the variant's code first on PYTHONPATH
(the baseline is `git archive`d into a temporary folder), its own database migrated by that
code, and a fresh backlog of `--orders` orders (3 or 4 lines each; every 50th product scarce,
so some orders fail reservation). Each parallel run is a process, as the runs the sensors start
are, calling the functions the `order_workflow` and `payment_settlement` ops call
(reserve_batch, initiate_batch, settle_batch) in a loop until nothing is left. Levels and
variants alternate, so both see the same load on a shared machine; compare the ratios.

Reported per measurement: orders/s, row writes per order (PostgreSQL: inserted + updated +
deleted tuples of all tables, from pg_stat_user_tables, during the workflow only) and the share
of HOT updates (all tables; orders alone). `--subset N` adds the old one-order-per-transaction
way on N orders (PostgreSQL, one connection, as one worker of the old queue did).

    python bench/workflow_bench.py [--orders 300000] [--parallel 1,2] [--baseline main]
        [--backend postgresql|mariadb|sqlite] [--batch-size 10000] [--subset 10000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URLS = {
    "postgresql": os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("ORDERSYS_BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql"),
}
PRODUCTS = 2000
CUSTOMERS = 10000
STOCK = "CASE WHEN id % 50 = 0 THEN 300 ELSE 2000 END"
DB_PREFIX = "ordersys_bench_workflow_"


def gateway_config():
    from ordersys_pipelines.domain.payments.config import GatewayConfig

    return GatewayConfig(secret="bench-secret", approval_rate=0.97, duplicate_rate=0.05, seed=1)


# --- the database of one measurement -------------------------------------------------------------

def create_database(backend: str, folder: str) -> str:
    name = f"{DB_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if backend == "sqlite":
        return f"sqlite:///{folder}/{name}.db"
    admin = create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"' if backend == "postgresql" else f"CREATE DATABASE `{name}`"))
        if backend == "postgresql":
            # An OLTP setting of this database: JIT costs more than it saves on these short statements.
            conn.execute(text(f'ALTER DATABASE "{name}" SET jit = off'))
    admin.dispose()
    return make_url(ADMIN_URLS[backend]).set(database=name).render_as_string(hide_password=False)


def drop_database(backend: str, url: str) -> None:
    name = make_url(url).database
    if backend == "sqlite":
        Path(name).unlink(missing_ok=True)
        return
    admin = create_engine(ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' if backend == "postgresql"
                          else f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def setup(engine) -> None:
    """Customers, products, and stock (the same for every measurement)."""
    from ordersys_pipelines.db.schema import customers, products

    with engine.begin() as conn:
        conn.execute(customers.insert(), [{"email": f"c{i}@example.com", "name": f"Customer {i}"}
                                          for i in range(1, CUSTOMERS + 1)])
        conn.execute(products.insert(), [{"sku": f"SKU-{i}", "name": f"Product {i}", "price_cents": 100, "stock": 0}
                                         for i in range(1, PRODUCTS + 1)])
        conn.execute(text(f"UPDATE products SET stock = {STOCK}"))


def generate(engine, orders: int, first_ref: int) -> None:
    """`orders` created orders of 3 or 4 lines (every third has 4: 1M lines for 300k orders), in
    a completed import; then fresh statistics, as after an import."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            _generate_pg(conn, orders, first_ref)
        else:
            _generate_portable(conn, orders, first_ref)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    elif engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE TABLE orders, order_lines, products"))


def _import_file(conn) -> int:
    from ordersys_pipelines.db.schema import import_files

    return conn.execute(import_files.insert().values(content_hash=uuid.uuid4().hex, original_name="generated.csv",
                                                     status="completed").returning(import_files.c.id)).scalar()


def _generate_pg(conn, orders: int, first_ref: int) -> None:
    file_id = _import_file(conn)
    conn.execute(text(
        "INSERT INTO orders (order_ref, customer_id, order_date, status, total_cents, import_file_id) "
        "SELECT 'B-' || lpad(i::text, 8, '0'), 1 + i % 10000, "
        "       timestamp '2024-01-01' + (i || ' seconds')::interval, 'created', 0, :file "
        "FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS i"),
        {"file": file_id, "a": first_ref, "b": first_ref + orders - 1})
    conn.execute(text(
        "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents) "
        "SELECT o.id, n, 1 + (o.id * 31 + n * 17) % CAST(:p AS int), 1 + (o.id + n) % 3, 100 + (o.id * 7 + n) % 900 "
        "FROM orders o CROSS JOIN generate_series(1, 4) AS n "
        "WHERE o.import_file_id = :file AND n <= 3 + (o.id % 3 = 0)::int"), {"p": PRODUCTS, "file": file_id})
    conn.execute(text(
        "UPDATE orders o SET total_cents = t.total FROM (SELECT order_id, SUM(quantity * unit_price_cents) AS total "
        "FROM order_lines GROUP BY order_id) t WHERE t.order_id = o.id AND o.import_file_id = :file"),
        {"file": file_id})


def _generate_portable(conn, orders: int, first_ref: int) -> None:
    """The same orders and lines as _generate_pg, computed in Python (MariaDB, SQLite)."""
    from datetime import datetime, timedelta

    from sqlalchemy import select

    from ordersys_pipelines.db.schema import order_lines
    from ordersys_pipelines.db.schema import orders as orders_table

    file_id = _import_file(conn)
    start = datetime(2024, 1, 1)
    for chunk in range(first_ref, first_ref + orders, 10_000):
        refs = range(chunk, min(chunk + 10_000, first_ref + orders))
        conn.execute(orders_table.insert(), [
            {"order_ref": f"B-{i:08d}", "customer_id": 1 + i % CUSTOMERS, "order_date": start + timedelta(seconds=i),
             "status": "created", "total_cents": 0, "import_file_id": file_id} for i in refs])
    ids = conn.execute(select(orders_table.c.id).where(orders_table.c.import_file_id == file_id)).scalars().all()
    for chunk in range(0, len(ids), 10_000):
        lines, totals = [], []
        for order_id in ids[chunk:chunk + 10_000]:
            total = 0
            for n in range(1, 4 + (order_id % 3 == 0)):
                quantity, price = 1 + (order_id + n) % 3, 100 + (order_id * 7 + n) % 900
                lines.append({"order_id": order_id, "line_no": n, "product_id": 1 + (order_id * 31 + n * 17) % PRODUCTS,
                              "quantity": quantity, "unit_price_cents": price})
                total += quantity * price
            totals.append({"oid": order_id, "total": total})
        conn.execute(order_lines.insert(), lines)
        conn.execute(text("UPDATE orders SET total_cents = :total WHERE id = :oid"), totals)


# --- one run's loop, and parallel runs -----------------------------------------------------------

def run_loop(url: str, batch_size: int) -> dict:
    """One run: batches until nothing is left (other runs may be claiming at the same time)."""
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.orders.reservation import reserve_batch
    from ordersys_pipelines.domain.payments.initiation import initiate_batch
    from ordersys_pipelines.domain.payments.settlement import settle_batch

    config = gateway_config()
    engine = get_engine(url)
    backends = server_processes(engine)
    cpu_started = time.process_time()
    phases = {"reserve": 0.0, "initiate": 0.0, "settle": 0.0}
    counts = {"reserved": 0, "failed": 0, "initiated": 0, "finalized": 0, "declined": 0, "rejected": 0}
    run = "bench-" + uuid.uuid4().hex[:8]
    claim = {"batch_size": batch_size, "claimant": run, "lease_seconds": 600, "run_id": run}
    started = time.time()
    while True:
        t0 = time.perf_counter()
        reserved = reserve_batch(engine, **claim)
        t1 = time.perf_counter()
        initiated = initiate_batch(engine, config=config, **claim)
        t2 = time.perf_counter()
        settled = settle_batch(engine, config=config, **claim)
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
            ended = time.time()
            cpu = {"client": time.process_time() - cpu_started, "server": sum(map(cpu_seconds, backends))}
            engine.dispose()  # the backend exits and flushes its table statistics
            return {"phases": phases, "counts": counts, "cpu": cpu, "started": started, "ended": ended}


def server_processes(engine) -> set[int]:
    """The ids of the PostgreSQL backends serving `engine` (filled in as connections open)."""
    pids: set[int] = set()
    if engine.dialect.name == "postgresql" and os.path.isdir("/proc"):
        @event.listens_for(engine, "connect")
        def remember(dbapi_connection, _record):
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.add(cursor.fetchone()[0])
            dbapi_connection.rollback()  # leave the fresh connection outside a transaction
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a local process so far (0 if it is gone or not readable).
    On a shared machine CPU seconds per order are steadier than wall-clock rates."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parallel(url: str, batch_size: int, runs: int) -> dict:
    """`runs` processes working one backlog at once; wall time from the first start to the last end."""
    with ProcessPoolExecutor(runs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(run_loop, [url] * runs, [batch_size] * runs))
    total = {key: {k: sum(p[key][k] for p in parts) for k in parts[0][key]} for key in ("phases", "counts", "cpu")}
    total["seconds"] = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    return total


TABLE_STATS = ("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables")


def table_stats(engine) -> dict[str, tuple[int, ...]]:
    """PostgreSQL's cumulative tuple counters per table (others: none)."""
    if engine.dialect.name != "postgresql":
        return {}
    time.sleep(1.0)  # the workers' backends flush their counters as they exit
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return {row[0]: tuple(row[1:]) for row in conn.execute(text(TABLE_STATS))}


def writes(before: dict, after: dict, orders: int) -> dict:
    if not after:
        return {}
    delta = {t: [a - b for a, b in zip(after[t], before.get(t, (0, 0, 0, 0)), strict=True)] for t in after}
    ins, upd, dele, hot = (sum(d[i] for d in delta.values()) for i in range(4))
    o = delta.get("orders", [0, 0, 0, 0])
    return {"row_writes_per_order": (ins + upd + dele) / orders, "hot_share": hot / upd if upd else 0.0,
            "orders_hot_share": o[3] / o[1] if o[1] else 0.0,
            "per_table": {t: round(sum(d[:3]) / orders, 2) for t, d in sorted(delta.items()) if sum(d[:3])}}


def check_terminal(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM orders WHERE status NOT IN ('finalized', 'failed')")).scalar()
        unbalanced = conn.execute(text("SELECT count(*) FROM products WHERE reserved <> 0 OR stock < 0")).scalar()
    return left, unbalanced


def measure(backend: str, orders: int, runs: int, batch_size: int) -> dict:
    """One measurement in a database of its own (the child's code, on PYTHONPATH)."""
    from ordersys_pipelines.db import migrate
    from ordersys_pipelines.db.engine import get_engine

    with tempfile.TemporaryDirectory(prefix="ordersys-bench-") as folder:
        url = create_database(backend, folder)
        try:
            migrate.upgrade(url)
            engine = get_engine(url)
            setup(engine)
            generate(engine, orders, 1)
            before = table_stats(engine)
            result = parallel(url, batch_size, runs)
            result.update(writes(before, table_stats(engine), orders))
            result["not_terminal"], result["unbalanced"] = check_terminal(engine)
            engine.dispose()
        finally:
            drop_database(backend, url)
    result["rate"] = orders / result["seconds"]
    result["orders"] = orders
    return result


def per_order(engine, order_ids: list[int]) -> dict:
    """The old system's way: every order through every stage in a transaction of its own, with
    row locks taken one by one (SELECT … FOR UPDATE) and one statement per line."""
    from ordersys_pipelines.db.engine import utcnow
    from ordersys_pipelines.domain.payments.gateway import (
        callback_payload,
        decide,
        new_event_id,
        new_payment_ref,
    )
    from ordersys_pipelines.domain.payments.signing import sign, verify

    CONFIG = gateway_config()  # noqa: N806 - the constant of the old code
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


def measure_per_order(orders: int) -> dict:
    from ordersys_pipelines.db import migrate
    from ordersys_pipelines.db.engine import get_engine

    url = create_database("postgresql", "")
    try:
        migrate.upgrade(url)
        engine = get_engine(url)
        setup(engine)
        generate(engine, orders, 1)
        with engine.begin() as conn:
            ids = list(conn.execute(text("SELECT id FROM orders ORDER BY order_date, order_ref")).scalars())
        before = table_stats(engine)
        t0 = time.perf_counter()
        counts = per_order(engine, ids)
        seconds = time.perf_counter() - t0
        engine.dispose()
        result = {"seconds": seconds, "rate": orders / seconds, "counts": counts,
                  **writes(before, table_stats(get_engine(url)), orders)}
        get_engine(url).dispose()
    finally:
        drop_database("postgresql", url)
    return result


# --- the parent: variants side by side ----------------------------------------------------------

def export(ref: str, folder: str) -> str:
    """The package as of git `ref`, in `folder` (to put first on PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "ordersys_pipelines"], check=True,
                             capture_output=True).stdout
    os.makedirs(folder)
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def child(code: str, *arguments: str) -> dict:
    """Run this script's `--child` mode with `code` first on PYTHONPATH; its last line is JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([code, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    done = subprocess.run([sys.executable, __file__, "--child", *arguments], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed ({code}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(label: str, runs: int, r: dict) -> str:
    c, p = r["counts"], r["phases"]
    line = (f"{label:<10} {runs} run(s): {r['rate']:>7,.0f} orders/s ({r['seconds']:.1f} s)  "
            f"[summed over runs: reserve {p['reserve']:.1f} s, initiate {p['initiate']:.1f} s, "
            f"settle {p['settle']:.1f} s]")
    cpu = r["cpu"]
    if cpu["server"]:
        line += (f"\n{'':<10} CPU per 1,000 orders: {1000 * (cpu['client'] + cpu['server']) / r['orders']:.2f} s "
                 f"(client {1000 * cpu['client'] / r['orders']:.2f}, server {1000 * cpu['server'] / r['orders']:.2f})")
    if "row_writes_per_order" in r:
        line += (f"\n{'':<10} row writes/order {r['row_writes_per_order']:.2f}, HOT updates "
                 f"{r['hot_share']:.0%} (orders {r['orders_hot_share']:.0%}); per table {r['per_table']}")
    line += (f"\n{'':<10} reserved {c['reserved']:,} (failed {c['failed']:,}), finalized {c['finalized']:,}, "
             f"declined {c['declined']:,}, callbacks rejected {c['rejected']:,}; not terminal {r['not_terminal']}, "
             f"unbalanced products {r['unbalanced']}")
    return line


def main() -> None:
    # A terminated benchmark still drops its databases (the children's `finally`).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--parallel", default="1,2", help="parallel runs per level, comma-separated")
    parser.add_argument("--backend", choices=["postgresql", "mariadb", "sqlite"], default="postgresql")
    parser.add_argument("--baseline", default="main", help="git ref(s) to compare with, comma-separated ('' for none)")
    parser.add_argument("--subset", type=int, default=10_000, help="orders for the one-order-per-transaction "
                                                                     "way (PostgreSQL; 0: skip)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--per-order", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure_per_order(args.orders) if args.per_order else measure(
            args.backend, args.orders, args.runs, args.batch_size)
        print(json.dumps(result))
        return

    common = ["--backend", args.backend, "--orders", str(args.orders), "--batch-size", str(args.batch_size)]
    with tempfile.TemporaryDirectory(prefix="ordersys-bench-baseline-") as folder:
        refs = [ref for ref in args.baseline.split(",") if ref]
        variants = {ref: export(ref, f"{folder}/{n}") for n, ref in enumerate(refs)} | {"this": str(ROOT)}
        print(f"{args.backend}, {args.orders:,} orders, batch {args.batch_size:,}, {os.cpu_count()} CPU cores; "
              f"variants: {', '.join(variants)} (alternating)")
        rates: dict[str, dict[int, float]] = {label: {} for label in variants}
        cpu: dict[str, dict[int, float]] = {label: {} for label in variants}  # CPU s per order
        for runs in [int(n) for n in args.parallel.split(",")]:
            for label, code in variants.items():
                result = child(code, *common, "--runs", str(runs))
                rates[label][runs] = result["rate"]
                cpu[label][runs] = (result["cpu"]["client"] + result["cpu"]["server"]) / args.orders
                print(describe(label, runs, result), flush=True)
        if args.subset and args.backend == "postgresql":
            old = child(str(ROOT), "--orders", str(args.subset), "--per-order")
            print(f"one order per transaction: {args.subset:,} orders, {old['rate']:,.0f} orders/s, "
                  f"row writes/order {old['row_writes_per_order']:.2f}")
    this = rates["this"]
    for label, by_runs in rates.items():
        if label != "this":
            print("this / " + label + ": " + ", ".join(f"{runs} run(s) {this[runs] / rate:.2f}x"
                                                       for runs, rate in by_runs.items()))
            if cpu["this"].get(1):
                scope = "" if args.backend == "postgresql" else " (this client only)"
                print(f"CPU per order{scope}, {label} / this: " + ", ".join(
                    f"{runs} run(s) {seconds / cpu['this'][runs]:.2f}x" for runs, seconds in cpu[label].items()))
    if 1 in this and 2 in this:
        print(f"scaling 1 → 2 runs: this {this[2] / this[1]:.2f}x" + "".join(
            f", {label} {r[2] / r[1]:.2f}x" for label, r in rates.items() if label != "this"))
        if args.backend == "postgresql":
            print(f"targets (idle machine, 300k): 1 run >= 3,000/s {'met' if this[1] >= 3000 else 'MISSED'}; "
                  f"2 runs >= 5,000/s {'met' if this[2] >= 5000 else 'MISSED'}; "
                  f"scaling >= 1.8x {'met' if this[2] / this[1] >= 1.8 else 'MISSED'}")


if __name__ == "__main__":
    main()
