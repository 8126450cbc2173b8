"""`ordersys process` end to end as a user runs it (import excluded), the code of this tree next
to an earlier version of it (`--baseline-ref`, default main), in the same run.

    python bench/process_bench.py [--lines 100000] [--processes 1,2] [--baseline-ref main] [--analytics]

Per version and process count K: K PostgreSQL databases, each loaded with the same catalog and
the same generated file (imported, not timed), then K `ordersys process --quiet` commands at
once, one per database (copies: each has a whole backlog), each with a Dagster instance of its
own (SQLite storage, the tree's dagster.yaml), the log channel writing to a file, callbacks
without delay. Orders/s = orders brought to a terminal state by all K / the wall time until the
last one ends. Without `--analytics` the commands run with `--no-analytics` (the KPI refresh
of the file's year of days is Dagster's event writes, see bench/backfill_bench.py).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from notifications_bench import export_tree
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
TERMINAL = ("finalized", "failed", "cancelled", "shipped", "delivered")
LAUNCH = "import sys; from ordersys_pipelines.cli import main; sys.argv[0] = 'ordersys'; main()"


def ordersys(tree: Path, env: dict, *args: str, background: bool = False):
    """The tree's `ordersys` command. Run from the instance folder: `python -c` puts the working
    directory first on the path, and this checkout's package must not shadow the tree's."""
    command = [sys.executable, "-c", LAUNCH, *args]
    full_env = {**os.environ, **env, "PYTHONPATH": str(tree)}
    cwd = Path(env["DAGSTER_HOME"]).parent
    if background:
        return subprocess.Popen(command, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(command, env=full_env, cwd=cwd, check=True, capture_output=True, text=True)


def environment(url: str, work: Path, label: str, redis_url: str) -> dict:
    home = work / f"home-{label}"
    return {
        "ORDERSYS_DATABASE_URL": url,
        "ORDERSYS_REDIS_URL": redis_url,
        "ORDERSYS_REDIS_PREFIX": f"{label}:",
        "ORDERSYS_NOTIFY_CHANNEL": "log",
        "ORDERSYS_NOTIFY_LOG_FILE": str(work / f"{label}-notifications.log"),
        "ORDERSYS_GATEWAY_CALLBACK_DELAY": "0",
        "ORDERSYS_GATEWAY_SEED": "1",
        "DAGSTER_HOME": str(home),
    }


def prepare(tree: Path, env: dict, catalog: Path, orders_file: Path) -> None:
    subprocess.run([sys.executable, "-m", "ordersys_pipelines.cli.instance_home", env["DAGSTER_HOME"],
                    str(tree / "dagster.yaml")], env={**os.environ, "PYTHONPATH": str(tree)},
                   cwd=Path(env["DAGSTER_HOME"]).parent, check=True)
    ordersys(tree, env, "catalog", "load", str(catalog))
    ordersys(tree, env, "import", str(orders_file))


def terminal_orders(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        done = conn.execute(text(f"SELECT count(*) FROM orders WHERE status IN {TERMINAL}")).scalar()
        sent = conn.execute(select(func.count()).select_from(text("notifications")).where(
            text("status = 'sent'"))).scalar()
    engine.dispose()
    return done, sent


def drop_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--processes", default="1,2", help="process counts to measure, e.g. 1,2")
    parser.add_argument("--baseline-ref", default="main", help="git ref of the earlier version ('' to skip)")
    parser.add_argument("--analytics", action="store_true", help="include the KPI refresh at the end")
    parser.add_argument("--pg-url", default=os.environ.get("ORDERSYS_TEST_PG_URL",
                                                           "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis-url", default=os.environ.get("ORDERSYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--db-prefix", default="ordersys_bench_process")
    args = parser.parse_args()
    counts = [int(k) for k in args.processes.split(",")]

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    trees = [("this tree", REPO)]
    if args.baseline_ref:
        trees.insert(0, (args.baseline_ref, export_tree(args.baseline_ref, work)))
    catalog, orders_file = work / "catalog.csv", work / "orders.csv"
    scratch = environment("sqlite:///" + str(work / "scratch.db"), work, "scratch", args.redis_url)
    ordersys(REPO, scratch, "catalog", "generate", "--out", str(catalog), "--stock", "10000000")
    ordersys(REPO, scratch, "generate-orders", "--rows", str(args.lines), "--out", str(orders_file))

    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    created: list[tuple[str, str]] = []  # (database, redis prefix)
    rates: dict[tuple[str, int], float] = {}
    print(f"load average at the start: {os.getloadavg()[0]:.1f}; {args.lines:,} lines; "
          f"{'with' if args.analytics else 'without'} the KPI refresh")
    print(f"{'code':<12} {'processes':>9} {'orders':>8} {'sent':>8} {'seconds':>8} {'orders/s':>9} {'lines printed':>14}")
    try:
        for code, tree in trees:
            for k in counts:
                envs = []
                for _ in range(k):
                    name = f"{args.db_prefix}_{os.getpid()}_{len(created)}"
                    with admin.connect() as conn:
                        conn.execute(text(f'CREATE DATABASE "{name}"'))
                    created.append((name, f"{name}:"))
                    url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
                    env = environment(url, work, name, args.redis_url)
                    prepare(tree, env, catalog, orders_file)
                    envs.append(env)
                flags = ["process", "--quiet"] + ([] if args.analytics else ["--no-analytics"])
                started = time.perf_counter()
                running = [ordersys(tree, env, *flags, background=True) for env in envs]
                outputs = [proc.communicate()[0] for proc in running]
                seconds = time.perf_counter() - started
                for proc, out in zip(running, outputs, strict=True):
                    if proc.returncode:
                        raise SystemExit(f"{code}: ordersys process failed:\n{out[-3000:]}")
                done = [terminal_orders(env["ORDERSYS_DATABASE_URL"]) for env in envs]
                orders, sent = sum(d for d, _ in done), sum(s for _, s in done)
                printed = max(len(out.splitlines()) for out in outputs)
                rates[(code, k)] = orders / seconds
                print(f"{code:<12} {k:>9} {orders:>8,} {sent:>8,} {seconds:>8.1f} {orders / seconds:>9,.0f} {printed:>14,}")
        for (code, k), rate in sorted(rates.items()):
            notes = []
            if k > 1 and (code, 1) in rates:
                notes.append(f"{rate / rates[(code, 1)]:.2f}x its 1 process")
            if code == "this tree" and (args.baseline_ref, k) in rates:
                notes.append(f"{rate / rates[(args.baseline_ref, k)]:.2f}x {args.baseline_ref}")
            if notes:
                print(f"{code}, {k} process(es): {', '.join(notes)}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        with admin.connect() as conn:
            for name, prefix in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                if args.analytics:
                    drop_redis_keys(args.redis_url, prefix)
        admin.dispose()
        tmp.cleanup()


if __name__ == "__main__":
    main()
