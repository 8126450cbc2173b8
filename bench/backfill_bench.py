"""Benchmark: a 365-day `ordersys kpi backfill` against a one-day one, per Dagster instance.

The ordersys database is a PostgreSQL database of its own with a processed year generated in
SQL (the data set of bench/analytics_bench.py, smaller by default). The command runs as the
operator runs it (`ordersys kpi backfill --from .. --to ..`, its own process, DAGSTER_HOME set so
the run is recorded in the instance), on

    sqlite      a local SQLite instance (what `make up` uses without DAGSTER_PG_URL)
    postgres    the production instance (./dagster.yaml's storage, a database of its own)

each with Dagster's defaults (the baseline: both switches off), with DAGSTER_EVENT_BATCH_SIZE
(batched event writes) only, and with the project's defaults (nothing set: the CLI turns on
batched writes and DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS, one planned-materialization
event per asset instead of one per partition), in one run of this script, so every figure stands
next to its baseline. Printed per configuration: the
command's wall time and the run's own time (what the command reports), one day and 365 days,
the ratio, and the events the year's run wrote, by type.

All databases (names `ordersys_h17_bench_*`) and Redis keys (a prefix of their own) are removed
at the end.

    python bench/backfill_bench.py [--orders 100000] [--batch-size 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import date
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analytics_bench import generate  # noqa: E402 - the same generated year as the analytics bench
from latency_bench import BIN, ROOT, PgDatabases, instance_at  # noqa: E402

from ordersys_pipelines.db import migrate  # noqa: E402
from ordersys_pipelines.db.engine import get_engine  # noqa: E402

REDIS_URL = os.environ.get("ORDERSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Dagster's switches for event writes (read per event, see dagster/_core/instance/utils.py and
# dagster/_core/storage/event_log/base.py in the installed version).
DAGSTER_VARIABLES = ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS")
RUN_LINE = re.compile(r"run (\S+): .* written in ([0-9.]+)s")


# Dagster's own defaults: both switches off (the CLI turns them on where they are unset).
BASELINE = {"DAGSTER_EVENT_BATCH_SIZE": "0", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "false"}


def variants(batch_size: int) -> list[dict[str, str]]:
    """Baseline (Dagster's defaults), batched event writes only, and the project's defaults
    (nothing set: the CLI sets cli/instance_home.py's DAGSTER_EVENT_ENV)."""
    return [BASELINE, {**BASELINE, "DAGSTER_EVENT_BATCH_SIZE": str(batch_size)}, {}]


def label(variant: dict[str, str]) -> str:
    if variant == BASELINE:
        return "baseline"
    if not variant:
        return "defaults (BATCH + SUBSET)"
    return " + ".join(f"{'BATCH' if 'BATCH' in k else 'SUBSET'}={v}" for k, v in variant.items()
                      if v not in ("0", "false"))


def instance_home(base: Path, kind: str, databases: PgDatabases) -> tuple[Path, dict[str, str]]:
    home = base / f"home_{kind}"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text()
    env: dict[str, str] = {}
    if kind == "postgres":
        url = databases.create("dagster").replace("postgresql://", "postgresql+psycopg2://", 1)
        env["DAGSTER_PG_URL"] = url
    else:
        config = re.sub(r"^storage:\n(?:[ \t]+.*\n)+", "", config, flags=re.M)
    (home / "dagster.yaml").write_text(config)
    return home, env


def backfill(env: dict, first: date, last: date) -> tuple[float, float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "ordersys"), "kpi", "backfill", "--from", first.isoformat(), "--to",
                           last.isoformat()], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    match = RUN_LINE.search(done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"kpi backfill {first}..{last} failed:\n{done.stdout}\n{done.stderr}")
    return wall, float(match.group(2)), match.group(1)


def events_by_type(home: Path, env: dict, run_id: str) -> Counter:
    with instance_at(home, env) as instance:
        return Counter(
            (e.dagster_event.event_type_value if e.dagster_event else "log message")
            for e in instance.all_logs(run_id)
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--year", type=int, default=date.today().year - 1)
    parser.add_argument("--batch-size", type=int, default=1000, help="DAGSTER_EVENT_BATCH_SIZE of the variant")
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure (median reported)")
    parser.add_argument("--instances", default="sqlite,postgres")
    args = parser.parse_args()

    first, last = date(args.year, 1, 1), date(args.year, 12, 31)
    one_day = date(args.year, 6, 15)
    databases = PgDatabases()
    prefix = f"ordersys_h17_bench:{os.getpid()}:{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(REDIS_URL)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs "
          "(other work on the machine slows every figure)")
    rows = []
    try:
        app_url = databases.create("app")
        migrate.upgrade(app_url)
        counts = generate(app_url, args.orders, args.customers, args.year)
        get_engine(app_url).dispose()
        print("generated: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
        with tempfile.TemporaryDirectory(prefix="ordersys_h17_bench_") as base_dir:
            for kind in args.instances.split(","):
                home, instance_env = instance_home(Path(base_dir), kind, databases)
                for batch in variants(args.batch_size):
                    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_PG_URL", *DAGSTER_VARIABLES)}
                    env.update(instance_env)
                    env.update({
                        "DAGSTER_HOME": str(home),
                        "ORDERSYS_DATABASE_URL": app_url,
                        "ORDERSYS_REDIS_URL": REDIS_URL,
                        "ORDERSYS_REDIS_PREFIX": prefix,
                        "ORDERSYS_KPI_START_DATE": first.isoformat(),
                    })
                    env.update(batch)
                    day_runs, year_runs = [], []
                    for _ in range(args.repeat):
                        day_runs.append(backfill(env, one_day, one_day))
                        year_runs.append(backfill(env, first, last))
                    events = events_by_type(home, instance_env, year_runs[-1][2])
                    day_events = events_by_type(home, instance_env, day_runs[-1][2])
                    rows.append((kind, batch, day_runs, year_runs, events, day_events))
                    print(f"  {kind} {label(batch)}: done", flush=True)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        databases.drop_all()

    print(f"\nmedian of {args.repeat}; wall = the whole command (Python start, schema check, run); "
          "run = the in-process run the command reports")
    print("BATCH = DAGSTER_EVENT_BATCH_SIZE, SUBSET = DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS")
    print(f"{'instance':<9} {'variant':>25} {'1 day wall/run':>15} {'365 days wall/run':>18} "
          f"{'ratio wall':>10} {'ratio run':>9} {'events 1d':>9} {'events 365d':>11}")
    for kind, batch, day_runs, year_runs, events, day_events in rows:
        day_wall, day_run = (statistics.median(r[i] for r in day_runs) for i in (0, 1))
        year_wall, year_run = (statistics.median(r[i] for r in year_runs) for i in (0, 1))
        print(f"{kind:<9} {label(batch):>25} {day_wall:7.2f}/{day_run:<7.2f} {year_wall:9.2f}/{year_run:<8.2f} "
              f"{year_wall / day_wall:9.1f}x {year_run / day_run:8.1f}x {sum(day_events.values()):9d} "
              f"{sum(events.values()):11d}")
    print("\nevents of one 365-day run, by type:")
    for kind, batch, _, _, events, _ in rows:
        top = ", ".join(f"{name} {n}" for name, n in events.most_common())
        print(f"  {kind}, {label(batch)}: {top}")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
