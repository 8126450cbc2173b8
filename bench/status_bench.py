"""Status benchmark: the answer time of `ordersys status` on a large database and a busy
instance, next to the old way (import the Definitions and Dagster, read the instance through
its API per job, group every table by status) in the same run.

A PostgreSQL database of its own (unique name, dropped at the end) gets `--orders` orders in
every state with their events, callbacks, refunds and notifications spread over the last two
days, generated with set-based SQL; a SQLite Dagster instance in a temporary DAGSTER_HOME gets
`--runs` finished runs (a few failed, some of those healed by a later run) written to its run
storage, and a few real failed runs with their event logs. Each way runs as the command an
operator types: a fresh process, timed from start to exit, median of `--repeat`.

    python bench/status_bench.py [--orders 300000] [--runs 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.db import migrate

ADMIN_URL = os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BIN = Path(sys.executable).parent

# What `ordersys status` did before: the Definitions for the job names, the latest runs of each
# job and the failed runs through Dagster's API, and every work table grouped by status.
OLD_WAY = """
import dagster as dg
from sqlalchemy import func, select
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import import_files, notifications, orders, payment_callbacks, refunds
from ordersys_pipelines.definitions import build_defs
from ordersys_pipelines.settings import get_settings

with get_engine(get_settings().database_url).connect() as conn:
    for column in (orders.c.status, import_files.c.status, payment_callbacks.c.status, refunds.c.status,
                   notifications.c.status):
        conn.execute(select(column, func.count()).group_by(column)).all()
instance = dg.DagsterInstance.get()
for job in sorted(j.name for j in build_defs().resolve_all_job_defs() if not j.name.startswith("__")):
    instance.get_run_records(dg.RunsFilter(job_name=job), limit=3)
instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=10)
"""


def generate(engine, orders: int) -> None:
    """Orders in every state, two events each, a callback, a notification; refunds for 5 %."""
    statements = [
        "INSERT INTO customers (email, name) SELECT 'c' || i || '@example.com', 'Customer ' || i "
        "FROM generate_series(1, 10000) AS i",
        "INSERT INTO import_files (content_hash, original_name, status, rows_read, lines_imported, rejected_rows, "
        " finished_at) SELECT md5(i::text), 'shop-' || i || '.csv', CASE WHEN i % 10 = 0 THEN 'failed' "
        " ELSE 'completed' END, 1000, 990, 10, now() - (i || ' minutes')::interval FROM generate_series(1, 200) AS i",
        "UPDATE import_files SET error = 'missing columns: unit_price (found order_ref, sku)' WHERE status = 'failed'",
        "INSERT INTO import_rejects (file_id, line_number, raw_text, reason) SELECT f.id, n, 'x,y,z', "
        " 'quantity: -1 is not between 1 and 1,000,000' FROM import_files f CROSS JOIN generate_series(2, 11) AS n",
        "INSERT INTO orders (order_ref, customer_id, order_date, status, status_reason, status_changed_at, "
        " total_cents, import_file_id) SELECT 'B-' || lpad(i::text, 8, '0'), 1 + i % 10000, "
        " now() - (i % 172800 || ' seconds')::interval, "
        " (ARRAY['finalized','finalized','finalized','finalized','finalized','finalized','finalized','failed',"
        "        'awaiting_payment','created'])[1 + i % 10], "
        " CASE WHEN i % 10 = 7 THEN (ARRAY['payment declined: insufficient_funds','out of stock: SKU-' || i % 50,"
        "        'payment timed out after 900 s'])[1 + i % 3] END, "
        " now() - (i % 172800 || ' seconds')::interval, 1000 + i % 5000, 1 + i % 180 "
        "FROM generate_series(1, :orders) AS i",
        "INSERT INTO order_events (order_id, from_status, to_status, created_at) "
        " SELECT id, 'reserved', 'awaiting_payment', status_changed_at FROM orders WHERE status <> 'created' "
        " UNION ALL SELECT id, 'awaiting_payment', status, status_changed_at FROM orders "
        " WHERE status IN ('finalized', 'failed')",
        "INSERT INTO payment_callbacks (event_id, payload, status, reason, received_at, available_at, processed_at) "
        " SELECT 'ev-' || id, '{}', CASE WHEN id % 100 = 0 THEN 'rejected' WHEN id % 97 = 0 THEN 'pending' "
        " ELSE 'applied' END, CASE WHEN id % 100 = 0 THEN 'signature does not match' END, status_changed_at, "
        " status_changed_at, CASE WHEN id % 97 <> 0 THEN status_changed_at END FROM orders WHERE status <> 'created'",
        "INSERT INTO refunds (order_id, reference, amount_cents, type, status, last_error, next_attempt_at, "
        " requested_at, processed_at) SELECT id, 'rf-' || id, 100, 'partial', (ARRAY['processed','processed',"
        " 'failed','pending'])[1 + id % 4], CASE WHEN id % 4 = 2 THEN 'gateway timeout' END, status_changed_at, "
        " status_changed_at, CASE WHEN id % 4 < 2 THEN status_changed_at END FROM orders "
        " WHERE status = 'finalized' AND id % 20 = 0",
        "INSERT INTO notifications (order_id, type, status, last_error, next_attempt_at, sent_at, dedup_key, "
        " created_at) SELECT id, 'order_' || status, CASE WHEN id % 200 = 0 THEN 'failed' WHEN id % 50 = 0 "
        " THEN 'pending' ELSE 'sent' END, CASE WHEN id % 200 = 0 THEN 'SMTP 550 mailbox unavailable' END, "
        " status_changed_at, CASE WHEN id % 50 <> 0 THEN status_changed_at END, 'n-' || id, status_changed_at "
        " FROM orders WHERE status <> 'created'",
    ]
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), {"orders": orders})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def fill_instance(home: Path, runs: int) -> None:
    """`runs` finished runs of every job in the run storage, 2 % failed, half of those healed by
    a later run of the same partition; and 5 real failed runs with their event logs."""
    import dagster as dg

    from ordersys_pipelines.cli.instance_runs import JOB_STAGES

    jobs = sorted(JOB_STAGES)

    @dg.op
    def work() -> None:
        raise RuntimeError("could not connect to server: Connection refused")

    @dg.job(name="order_workflow")
    def failing() -> None:
        work()

    now = time.time()
    with dg.DagsterInstance.get() as instance:
        for i in range(runs):
            failed = i % 50 == 0
            status = dg.DagsterRunStatus.FAILURE if failed else dg.DagsterRunStatus.SUCCESS
            tags = {"ordersys/stage": JOB_STAGES[jobs[i % len(jobs)]], "dagster/partition": f"p-{i // 100}"}
            run_id = instance.run_storage.add_run(
                dg.DagsterRun(job_name=jobs[i % len(jobs)], run_id=str(uuid.uuid4()), status=status, tags=tags)).run_id
            ended = now - (runs - i) * 20
            with instance.run_storage.connect() as conn:
                conn.execute(text("UPDATE runs SET start_time = :s, end_time = :e WHERE run_id = :r"),
                             {"s": ended - 5, "e": ended, "r": run_id})
        for _ in range(5):
            failing.execute_in_process(instance=instance, raise_on_error=False, tags={"ordersys/stage": "workflow"})


def timed(argv: list[str], env: dict, repeat: int) -> tuple[float, str]:
    seconds, output = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{argv} failed:\n{done.stdout}\n{done.stderr}")
        output = done.stdout
    return statistics.median(seconds), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="Also print where one status call spends its time.")
    args = parser.parse_args()

    name = f"ordersys_bench_status_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="status-bench-") as scratch:
            home = Path(scratch) / "dagster_home"
            home.mkdir()
            env = {**os.environ, "ORDERSYS_DATABASE_URL": url, "DAGSTER_HOME": str(home),
                   "ORDERSYS_INBOX": str(Path(scratch) / "inbox"), "COLUMNS": "200"}
            env.pop("DAGSTER_PG_URL", None)
            os.environ.update({k: env[k] for k in ("ORDERSYS_DATABASE_URL", "DAGSTER_HOME")})
            migrate.upgrade(url)
            started = time.perf_counter()
            engine = create_engine(url)
            generate(engine, args.orders)
            fill_instance(home, args.runs)
            print(f"prepared {args.orders:,} orders and {args.runs:,} runs in {time.perf_counter() - started:.1f} s",
                  flush=True)
            load = os.getloadavg()[0]
            new, output = timed([str(BIN / "ordersys"), "status"], env, args.repeat)
            new_json, _ = timed([str(BIN / "ordersys"), "status", "--json"], env, args.repeat)
            old, _ = timed([sys.executable, "-c", OLD_WAY], env, args.repeat)
            bare, _ = timed([sys.executable, "-c", "pass"], env, args.repeat)
            if args.profile:
                profile = ("import cProfile; from ordersys_pipelines.cli import main; "
                           "cProfile.run('main([\"status\", \"--json\"], standalone_mode=False)', sort='cumtime')")
                print(subprocess.run([sys.executable, "-c", profile], env=env, capture_output=True, text=True)
                      .stdout[:7000])
            engine.dispose()
        print(output)
        print(f"load average at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}")
        print(f"| way | seconds (median of {args.repeat}) |")
        print("|---|---|")
        print(f"| `ordersys status` | {new:.2f} |")
        print(f"| `ordersys status --json` | {new_json:.2f} |")
        print(f"| the old way (Definitions + Dagster API + group by status) | {old:.2f} |")
        print(f"| a bare `python -c pass` (interpreter start) | {bare:.2f} |")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
