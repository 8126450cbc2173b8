"""Benchmark: rebuild a year of daily KPI partitions and the customer leaderboard.

In a PostgreSQL database of its own (unique name, dropped at the end) a processed data set is
generated with set-based SQL: orders over one year in the final states the workflow leaves
(finalized, shipped, delivered, failed, cancelled, a few still created), refunds processed days
after their orders, one notification per order. (The import and workflow stages are not used:
the data is written directly, so the figures measure analytics alone.)

Then, in the same process:
1. the bare SQL aggregates (the same grouped queries the assets run, no Dagster, no Redis);
2. Dagster's own floor: a run of the same shape (365 partitions of an asset that does nothing,
   plus an unpartitioned one), on the same instance;
3. the real thing: ONE in-process Dagster run (single-run backfill policy) materializing the
   365 `daily_kpis` partitions and `customer_leaderboard`, on a temporary SQLite instance;
4. `ordersys kpi` and `ordersys leaderboard` with a database URL that cannot answer.

Prints the seconds and the ratio run / bare SQL (target: at most 20×).

    python bench/analytics_bench.py [--orders 300000] [--customers 60000] [--timezone Europe/Berlin]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from datetime import date, datetime

import dagster as dg
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.assets.analytics import DAILY_KPIS, build_analytics, materialize_days
from ordersys_pipelines.cli import main as cli
from ordersys_pipelines.db import migrate
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.analytics.days import local_midnight_utc
from ordersys_pipelines.domain.analytics.kpis import (
    compute_range,
    consistent_read,
    orders_before_start,
    total,
)
from ordersys_pipelines.domain.analytics.leaderboard import customer_net_revenue, net_revenue_totals
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.resources.redis import connect
from ordersys_pipelines.settings import Settings

ADMIN_URL = os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_RATIO = 20.0

GENERATE = [
    "SELECT setseed(0.6)",
    """INSERT INTO customers (id, email, name)
       SELECT n, 'customer' || n || '@bench.example', 'Customer ' || n FROM generate_series(1, :customers) n""",
    # Order dates spread over the year (UTC), statuses in the shares the workflow leaves.
    """INSERT INTO orders (id, order_ref, customer_id, order_date, status, total_cents, status_changed_at)
       SELECT n, 'B-' || n, 1 + floor(c * :customers)::int,
              :year_start + d * (:year_end - :year_start),
              CASE WHEN s < 0.55 THEN 'finalized' WHEN s < 0.75 THEN 'shipped' WHEN s < 0.85 THEN 'delivered'
                   WHEN s < 0.93 THEN 'failed' WHEN s < 0.97 THEN 'cancelled' ELSE 'created' END,
              500 + floor(a * 49500)::bigint, :year_start
       FROM (SELECT n, random() AS c, random() AS d, random() AS s, random() AS a
             FROM generate_series(1, :orders) n) g""",
    # About 6 % of the orders that reached finalized get a refund, processed up to 20 days later.
    """INSERT INTO refunds (order_id, reference, amount_cents, type, status, processed_at, requested_at)
       SELECT id, 'BR-' || id, CASE WHEN f < 0.5 THEN total_cents ELSE floor(total_cents * f)::bigint END,
              CASE WHEN f < 0.5 THEN 'full' ELSE 'partial' END,
              CASE WHEN p < 0.9 THEN 'processed' ELSE 'failed' END,
              CASE WHEN p < 0.9 THEN order_date + random() * interval '20 days' END, order_date
       FROM (SELECT id, total_cents, order_date, random() AS pick, random() AS f, random() AS p
             FROM orders WHERE status IN ('finalized', 'shipped', 'delivered')) o
       WHERE pick < 0.06""",
    # One notification per order: sent minutes later, a few failed for good, a few pending.
    """INSERT INTO notifications (order_id, customer_id, type, status, sent_at, next_attempt_at, dedup_key)
       SELECT id, customer_id, 'order_confirmed',
              CASE WHEN r < 0.95 THEN 'sent' WHEN r < 0.97 THEN 'failed' ELSE 'pending' END,
              CASE WHEN r < 0.95 THEN order_date + r * interval '10 minutes' END,
              order_date + interval '1 hour', 'order:' || id || '\\:order_confirmed'
       FROM (SELECT id, customer_id, order_date, random() AS r FROM orders) o""",
    "ANALYZE",
]


def create_database(name: str) -> str:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str, url: str) -> None:
    get_engine(url).dispose()
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def generate(url: str, orders: int, customers: int, year: int) -> dict[str, int]:
    params = {
        "orders": orders,
        "customers": customers,
        "year_start": datetime(year, 1, 1),
        "year_end": datetime(year + 1, 1, 1),
    }
    with get_engine(url).begin() as conn:
        for statement in GENERATE:
            if statement == "ANALYZE":
                continue
            conn.execute(text(statement), {k: v for k, v in params.items() if f":{k}" in statement})
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("customers", "orders", "refunds", "notifications")
        }


def bare_sql(settings: Settings, first: date, last: date) -> float:
    """The aggregates the two assets need, straight from the database."""
    started = time.perf_counter()
    with consistent_read(get_engine(settings.database_url)) as conn:
        compute_range(conn, first, last, settings.tz)
        orders_before_start(conn, local_midnight_utc(first, settings.tz))
    with consistent_read(get_engine(settings.database_url)) as conn:
        customer_net_revenue(conn)
        net_revenue_totals(conn)
    return time.perf_counter() - started


def dagster_floor(settings: Settings, first: date, last: date, instance: dg.DagsterInstance) -> float:
    """Dagster's own cost for a run of the same shape: one partitioned asset over the same
    days plus one unpartitioned asset, both doing nothing."""
    partitions = dg.DailyPartitionsDefinition(
        start_date=settings.kpi_start_date, timezone=settings.timezone, end_offset=1
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)

        @dg.asset(name="empty_daily", partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
        def empty_daily() -> None:
            return None

    @dg.asset(name="empty_whole")
    def empty_whole() -> None:
        return None

    assets = [empty_daily, empty_whole]
    job = dg.Definitions(assets=assets, jobs=[dg.define_asset_job("floor", assets)]).resolve_job_def("floor")
    started = time.perf_counter()
    job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={"dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat()},
    )
    return time.perf_counter() - started


def read_commands(settings: Settings, day: date) -> tuple[float, float, str]:
    """`ordersys kpi` and `ordersys leaderboard` with a database URL that cannot answer."""
    env = {
        "ORDERSYS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unreachable",
        "ORDERSYS_REDIS_URL": settings.effective_redis_url,
        "ORDERSYS_REDIS_PREFIX": settings.redis_key_prefix,
        "ORDERSYS_TIMEZONE": settings.timezone,
    }
    runner = CliRunner()
    started = time.perf_counter()
    kpi = runner.invoke(cli, ["kpi", "--date", day.isoformat()], env=env)
    kpi_seconds = time.perf_counter() - started
    started = time.perf_counter()
    board = runner.invoke(cli, ["leaderboard", "--top", "5"], env=env)
    board_seconds = time.perf_counter() - started
    if kpi.exit_code or board.exit_code:
        raise SystemExit(f"read commands failed:\n{kpi.output}\n{board.output}")
    return kpi_seconds, board_seconds, kpi.output + "\n" + board.output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--timezone", default="Europe/Berlin")
    parser.add_argument("--year", type=int, default=date.today().year - 1)
    parser.add_argument("--repeat", type=int, default=3, help="bare SQL repetitions (median reported)")
    args = parser.parse_args()

    name = f"ordersys_bench_analytics_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    prefix = f"ordersys_bench_analytics:{os.getpid()}:"
    first, last = date(args.year, 1, 1), date(args.year, 12, 31)
    url = create_database(name)
    redis_client = None
    try:
        migrate.upgrade(url)
        base = Settings.from_env()
        settings = dataclasses.replace(
            base,
            database_url=url,
            redis_key_prefix=prefix,
            timezone=args.timezone,
            kpi_start_date=first.isoformat(),
        )
        redis_client = connect(settings.effective_redis_url)
        print(f"database {name}; Redis prefix {prefix}; time zone {settings.timezone}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        started = time.perf_counter()
        counts = generate(url, args.orders, args.customers, args.year)
        print(f"generated in SQL in {time.perf_counter() - started:.1f}s: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))

        bare_sql(settings, first, last)  # warm the cache so both sides read the same pages
        bare = [bare_sql(settings, first, last) for _ in range(args.repeat)]
        bare_median = statistics.median(bare)

        analytics = build_analytics(settings)
        resources = build_resources(settings)
        with tempfile.TemporaryDirectory() as home:
            instance = dg.DagsterInstance.local_temp(home)
            floor = dagster_floor(settings, first, last, instance)
            started = time.perf_counter()
            result = materialize_days(analytics, resources, first, last, instance=instance, log_level="WARNING")
            run_seconds = time.perf_counter() - started
            if not result.success:
                raise SystemExit("the analytics run failed")
            analytics_runs = [r for r in instance.get_runs() if r.job_name == "analytics_refresh"]
            daily = result.asset_materializations_for_node(DAILY_KPIS.path[-1])
            partitions = len(daily)
            board = next(
                e.event_specific_data.materialization
                for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("customer_leaderboard")
            )
            body = {
                "daily_kpis": daily[0].metadata["seconds"].value,
                "daily_kpis SQL": daily[0].metadata["sql_seconds"].value,
                "customer_leaderboard": board.metadata["seconds"].value,
            }
            checks = result.get_asset_check_evaluations()
            instance.dispose()

        hashes = sum(1 for _ in redis_client.scan_iter(match=f"{prefix}kpi:daily:*", count=1000))
        members = redis_client.zcard(f"{prefix}leaderboard:customers")
        with get_engine(url).connect() as conn:
            year_total = total(compute_range(conn, first, last, settings.tz))
        kpi_seconds, board_seconds, sample = read_commands(settings, date(args.year, 6, 15))

        ratio = run_seconds / bare_median
        print()
        print(f"load average now {os.getloadavg()[0]:.1f} (other work on the machine slows both sides)")
        print(f"bare SQL aggregates (365 days + leaderboard), median of {args.repeat}: {bare_median:.3f}s "
              f"(runs: {', '.join(f'{b:.3f}' for b in bare)})")
        print(f"Dagster floor, run of the same shape with empty assets:      {floor:.3f}s")
        print(f"analytics backfill, ONE run ({len(analytics_runs)} run(s), {partitions} partitions, "
              f"{len(checks)} checks {'all passed' if all(c.passed for c in checks) else 'NOT all passed'}): "
              f"{run_seconds:.3f}s")
        print("  asset bodies (SQL + Redis + checks): " + ", ".join(f"{k} {v:.3f}s" for k, v in body.items()))
        print(f"  → {hashes} kpi:daily hashes, leaderboard of {members:,} customers; "
              f"year: {year_total.order_count:,} orders, net {year_total.revenue_cents / 100:,.2f}")
        print(f"ratio run / bare SQL: {ratio:.1f}x (target ≤ {TARGET_RATIO:.0f}x) "
              f"{'OK' if ratio <= TARGET_RATIO else 'OVER TARGET'}; run minus Dagster floor: {run_seconds - floor:.3f}s")
        print(f"`ordersys kpi` {kpi_seconds:.3f}s and `ordersys leaderboard` {board_seconds:.3f}s "
              "with an unreachable database URL (Redis only)")
        print()
        print(sample)
        ok = len(analytics_runs) == 1 and partitions == 365 and ratio <= TARGET_RATIO
        return 0 if ok else 1
    finally:
        if redis_client is not None:
            for key in redis_client.scan_iter(match=f"{prefix}*", count=1000):
                redis_client.delete(key)
        drop_database(name, url)


if __name__ == "__main__":
    sys.exit(main())
