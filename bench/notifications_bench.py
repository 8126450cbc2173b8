"""Notification dispatch throughput, the code of this tree next to an earlier version of it
(`--baseline-ref`, default main) and next to one notification per transaction, same data, same
run, on SQLite and PostgreSQL.

    python bench/notifications_bench.py [--count 5000] [--baseline-ref main] [--pg-url URL]

Each measurement runs in a process of its own with the tree's code on PYTHONPATH (the baseline
is `git archive`d into a temporary folder), each with its own default batch size.

- `log` channel: the lines go to a file (the earlier version wrote them on a logger: here a file
  handler on it; under Dagster that logger was managed, one event write per line, not counted).
- `webhook` channel (`--webhook`, PostgreSQL): a local HTTP/1.1 receiver that answers at once;
  next to it, the receiver's own ceiling: the same POSTs from one client over one keep-alive
  connection, no database.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]


def load(url: str, count: int) -> None:
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.db.schema import customers, order_lines, orders, products
    from ordersys_pipelines.domain.notifications.outbox import enqueue_for_orders

    engine = get_engine(url)
    with engine.begin() as conn:
        tables = ("notifications", "order_lines", "orders", "products", "customers")
        if conn.dialect.name == "postgresql":
            # DELETE would check every order's referencing rows one by one, dead ones included:
            # quadratic at tens of thousands of notifications.
            conn.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
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


def worker(args: argparse.Namespace) -> None:
    """One measurement, with whatever ordersys_pipelines is on the path; prints a JSON line."""
    from ordersys_pipelines.db import migrate
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.db.schema import notifications
    from ordersys_pipelines.domain.notifications.config import NotifierConfig
    from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending

    migrate.upgrade(args.url)
    load(args.url, args.count)
    options = {"channel": args.channel, "webhook_url": args.webhook_url}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if "log_file" in {f.name for f in dataclasses.fields(NotifierConfig)}:
        options["log_file"] = args.log_file
    else:  # the earlier log channel: a logger; a file handler writes its lines
        channel_logger = logging.getLogger("ordersys.notifications")
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        channel_logger.addHandler(handler)
        channel_logger.propagate = False
    config = NotifierConfig(**options)
    engine = get_engine(args.url)
    started = time.perf_counter()
    result = dispatch_pending(engine, config, claimant=f"bench-{os.getpid()}")
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        unsent = conn.execute(select(notifications.c.id).where(notifications.c.status != "sent")).first()
    assert result.sent == args.count and unsent is None, result
    engine.dispose()
    print(json.dumps({"seconds": seconds, "batch_size": config.batch_size}))


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    requests = 0
    connections: set = set()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests += 1
        type(self).connections.add(self.client_address)
        # Status, headers and body in one write: split, Nagle and the client's delayed ACK
        # hold the body back 40 ms.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def log_message(self, *args):
        pass


def receiver_ceiling(url: str, count: int) -> float:
    """POSTs/s of one client on one keep-alive connection (no database, no rendering)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = json.dumps({"event_id": "x", "body": "y" * 900}).encode()
    started = time.perf_counter()
    for _ in range(count):
        conn.request("POST", parts.path, body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    seconds = time.perf_counter() - started
    conn.close()
    return count / seconds


def export_tree(ref: str, into: Path) -> Path:
    archive = into / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def run_worker(tree: Path, url: str, count: int, channel: str, log_file: Path, batch_size: int = 0,
               webhook_url: str | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", "--url", url, "--count", str(count), "--channel", channel,
               "--log-file", str(log_file), "--batch-size", str(batch_size)]
    if webhook_url:
        command += ["--webhook-url", webhook_url]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{channel} worker of {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--baseline-ref", default="main", help="git ref of the earlier version ('' to skip)")
    parser.add_argument("--baseline-count", type=int, default=500,
                        help="notifications for the one-per-transaction baseline (it is slow)")
    parser.add_argument("--webhook", action="store_true", help="also the webhook channel (PostgreSQL)")
    parser.add_argument("--pg-url", default=os.environ.get("ORDERSYS_TEST_PG_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--db-prefix", default="ordersys_bench_notifications")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--channel", default="log", help=argparse.SUPPRESS)
    parser.add_argument("--log-file", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--webhook-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    trees = [("this tree", REPO)]
    if args.baseline_ref:
        trees.insert(0, (args.baseline_ref, export_tree(args.baseline_ref, work)))
    # A database per tree: a baseline older than a migration cannot use one the tree upgraded.
    targets: list[tuple[str, dict[str, str]]] = [
        ("sqlite", {code: f"sqlite:///{work / f'bench-{i}.db'}" for i, (code, _) in enumerate(trees)})]
    admin = None
    name = f"{args.db_prefix}_{os.getpid()}"
    names = [f"{name}_{i}" for i in range(len(trees))]
    try:
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for database in names:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
        targets.append(("postgresql", {
            code: make_url(args.pg_url).set(database=database).render_as_string(hide_password=False)
            for (code, _), database in zip(trees, names, strict=True)}))
    except Exception as exc:  # no PostgreSQL here: SQLite only
        print(f"PostgreSQL not used: {exc}")
        admin = None
    server = None
    try:
        load_avg = os.getloadavg()[0]
        print(f"load average at the start: {load_avg:.1f}")
        print(f"{'backend':<11} {'channel':<8} {'code':<12} {'mode':<28} {'count':>6} {'seconds':>8} {'per second':>11}")
        figures: dict[tuple[str, str, str], float] = {}

        def show(backend, channel, code, mode, count, seconds):
            figures[(backend, channel, code)] = count / seconds
            print(f"{backend:<11} {channel:<8} {code:<12} {mode:<28} {count:>6} {seconds:>8.2f} {count / seconds:>11.0f}")

        for backend, urls in targets:
            for code, tree in trees:
                url = urls[code]
                log_file = work / f"{backend}-{code.replace(' ', '_')}.log"
                if code == "this tree":
                    once = run_worker(tree, url, args.baseline_count, "log", log_file, batch_size=1)
                    show(backend, "log", code, "one per transaction", args.baseline_count, once["seconds"])
                result = run_worker(tree, url, args.count, "log", log_file)
                show(backend, "log", code, f"batched, {result['batch_size']} per batch", args.count, result["seconds"])
        if args.webhook and admin is not None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
            pg_urls = targets[-1][1]
            for code, tree in trees:
                before = (_Receiver.requests, len(_Receiver.connections))
                result = run_worker(tree, pg_urls[code], args.count, "webhook", work / "hook.log", webhook_url=hook)
                show("postgresql", "webhook", code, f"batched, {result['batch_size']} per batch", args.count,
                     result["seconds"])
                print(f"{'':<32} receiver saw {_Receiver.requests - before[0]} requests on "
                      f"{len(_Receiver.connections) - before[1]} connections")
            ceiling = receiver_ceiling(hook, args.count)
            print(f"{'postgresql':<11} {'webhook':<8} {'-':<12} {'receiver ceiling, 1 client':<28} {args.count:>6} "
                  f"{args.count / ceiling:>8.2f} {ceiling:>11.0f}")
            figures[("postgresql", "webhook", "ceiling")] = ceiling
        if args.baseline_ref:
            for (backend, channel, code), rate in sorted(figures.items()):
                if code == "this tree" and (backend, channel, args.baseline_ref) in figures:
                    print(f"{backend} {channel}: this tree / {args.baseline_ref} = "
                          f"{rate / figures[(backend, channel, args.baseline_ref)]:.2f}x")
        if ("postgresql", "webhook", "ceiling") in figures:
            print(f"postgresql webhook: this tree / receiver ceiling = "
                  f"{figures[('postgresql', 'webhook', 'this tree')] / figures[('postgresql', 'webhook', 'ceiling')]:.2f}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if admin is not None:
            with admin.connect() as conn:
                for database in names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
