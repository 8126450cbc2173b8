"""Latency benchmark: a file dropped into the inbox of the real stack, until it is done.

Starts the stack the way `make up` does (`scripts/stack.sh up`: webserver + daemon, sensors
running) on a free port, with a DAGSTER_HOME, an ordersys database and an inbox of its own in a
temporary directory and a Redis key prefix of its own. A catalog with stock is loaded, an N-line
file is written with `ordersys generate-orders` next to the inbox and renamed into it, and the
benchmark watches the database, Redis and the Dagster instance until:

    import done       the import run of the file succeeded
    orders terminal   every order of the file is in a settled state
    KPIs in Redis     every day of the file has its KPI hash, equal to the database's figures
    last notification nothing is left to send; the time of the last one sent

Then it reads every run of the instance (run records and event log) and prints where each
second went, per run:

    sensor wait  trigger (the drop, or the latest step or run end before) → run created
    queue        run created → RUN_STARTING (run queue: its loop, the stage's tag limit)
    launch       RUN_STARTING → RUN_START (the run's process starts and loads the code), in two:
      process    RUN_STARTING → "Started process for run" (Python, Dagster, the instance)
      code load  that → RUN_START (the code location is imported, the execution plan built)
    step start   RUN_START → first STEP_START
    steps        the steps' own durations (STEP_START → STEP_SUCCESS), summed
    between      the rest of first STEP_START → last step end (starting the next step)
    tail         last step end → RUN_SUCCESS / RUN_FAILURE

Each run measures the project's defaults (`defaults`) next to a baseline of the settings before
the latency work (`baseline`: ORDERSYS_EXECUTOR=multiprocess, ORDERSYS_SENSOR_INTERVAL=30,
ORDERSYS_SETTLE_IN_WORKFLOW=false, Dagster's event writes unbatched, the run queue's 5 s loop,
Dagster's default run launcher), each on a fresh stack, printed side by side. Before the timed
drop each stack finishes a small file (`--warm-up-rows`, default 20), as a stack that has been up
a while has run every stage once; only the runs after the drop are reported. `--variant NAME=VALUE[,NAME=VALUE]` adds a flow with
those environment variables over the defaults (e.g. `--variant ORDERSYS_SENSOR_INTERVAL=10`);
`--no-baseline` leaves the baseline out. `--pg` puts the Dagster instance (DAGSTER_PG_URL)
and the ordersys database in PostgreSQL databases of their own, dropped at the end. Every flow is
bounded by `--timeout`; the stack is always stopped.

    python bench/latency_bench.py [--rows 3000] [--pg] [--no-baseline] [--variant NAME=VALUE] [--timeout 600]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from ordersys_pipelines.db.engine import get_engine, reading
from ordersys_pipelines.db.schema import import_files, notifications, orders
from ordersys_pipelines.domain.analytics.kpis import compute_range
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore
from ordersys_pipelines.domain.orders import states

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / os.environ.get("VENV", ".venv") / "bin"
ADMIN_URL = os.environ.get("ORDERSYS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ORDERSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NAME = "ordersys_h17_bench"
UNSENT = ("pending", "sending")
POLL_S = 0.5


@dataclass
class RunTimes:
    job: str
    run_id: str
    status: str
    created: float
    started: float | None
    ended: float | None
    dequeued: float | None = None
    process_started: float | None = None
    first_step: float | None = None
    last_step_end: float | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)
    events: int = 0
    failure: str | None = None  # the first step failure's message, for a failed run


@dataclass
class Flow:
    label: str
    rows: int
    orders: int = 0
    milestones: dict[str, float | None] = field(default_factory=dict)
    runs: list[RunTimes] = field(default_factory=list)
    drop: float = 0.0
    error: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgDatabases:
    """PostgreSQL databases named after this benchmark, all dropped by `drop_all`."""

    def __init__(self) -> None:
        self.admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self, role: str) -> str:
        name = f"{NAME}_{os.getpid()}_{uuid.uuid4().hex[:6]}_{role}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


def ordersys(env: dict, *args: str) -> str:
    done = subprocess.run([str(BIN / "ordersys"), *args], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"ordersys {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def file_days(path: Path) -> list[date]:
    """The distinct order dates of a generated file (its `order_date` column)."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["order_date"],
                                                                      column_types={"order_date": "string"}))
    return sorted({date.fromisoformat(value[:10]) for value in table.column("order_date").to_pylist() if value})


def order_fields(values: dict) -> dict[str, int]:
    # The notification counters of a day change until the last notification is sent; the
    # milestone "KPIs in Redis" is about the orders of the file.
    return {k: int(v) for k, v in values.items() if not k.startswith("notifications_")}


def kpis_in_redis(engine, store: AnalyticsStore, days: list[date]) -> bool:
    stored = store.read_days(days)
    if not all(stored[d] for d in days):
        return False
    with reading(engine) as conn:
        expected = compute_range(conn, days[0], days[-1], ZoneInfo("UTC"))
    return all(order_fields(stored[d]) == order_fields(expected[d].as_hash()) for d in days)


def watch(flow: Flow, env: dict, engine, store: AnalyticsStore, days: list[date], file_name: str,
          deadline: float) -> None:
    """Poll until every milestone is reached (or the deadline); times relative to the drop."""
    marks = flow.milestones
    for name in ("import done", "orders terminal", "KPIs in Redis", "last notification"):
        marks[name] = None
    while time.time() < deadline:
        now = time.time() - flow.drop
        with reading(engine) as conn:
            if marks["import done"] is None:
                row = conn.execute(select(import_files.c.status, import_files.c.orders_imported).where(
                    import_files.c.original_name == file_name)).first()
                status = row.status if row else None
                if status == "completed":
                    marks["import done"] = now
                    flow.orders = row.orders_imported
                elif status == "failed":
                    flow.error = "the import failed"
                    return
            if marks["import done"] is not None and marks["orders terminal"] is None:
                counts = dict(conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all())
                if sum(counts.values()) >= flow.orders and not any(
                        counts.get(s) for s in (states.CREATED, states.RESERVED, states.AWAITING_PAYMENT)):
                    marks["orders terminal"] = now
            if marks["orders terminal"] is not None and marks["last notification"] is None:
                unsent = conn.execute(select(func.count()).select_from(notifications).where(
                    notifications.c.status.in_(UNSENT))).scalar_one()
                if not unsent:
                    last = conn.execute(select(func.max(notifications.c.sent_at))).scalar()
                    marks["last notification"] = (_epoch(last) - flow.drop) if last else now
        if marks["orders terminal"] is not None and marks["KPIs in Redis"] is None and kpis_in_redis(engine, store, days):
            marks["KPIs in Redis"] = now
        if all(v is not None for v in marks.values()):
            return
        time.sleep(POLL_S)
    flow.error = f"timed out; reached: {', '.join(k for k, v in marks.items() if v is not None) or 'nothing'}"


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


# The run queue takes a run off the queue and hands it to the launcher: RUN_STARTING (OSS has
# no RUN_DEQUEUED event of its own).
DEQUEUED = {dg.DagsterEventType.RUN_DEQUEUED, dg.DagsterEventType.RUN_STARTING}
STEP_END = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
# The engine event the run's process writes once Python, Dagster and the instance are up, before
# it imports the code location (dagster/_grpc/impl.py).
PROCESS_STARTED = "Started process for run"


@contextmanager
def instance_at(home: Path, env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The instance in `home`; its dagster.yaml may read DAGSTER_PG_URL, so the variables of
    `env` are set while it is open."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


IN_FLIGHT = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def wait_for_runs(home: Path, env: dict[str, str], deadline: float) -> int:
    """Wait until no run is queued or in progress (or the deadline); the runs still in flight."""
    with instance_at(home, env) as instance:
        while True:
            time.sleep(1)  # a run a sensor requests on the last step's end, and its record
            left = instance.get_runs_count(dg.RunsFilter(statuses=IN_FLIGHT))
            if not left or time.time() >= deadline:
                return left


def read_runs(home: Path, env: dict[str, str]) -> list[RunTimes]:
    with instance_at(home, env) as instance:
        found = []
        for record in instance.get_run_records():
            run = record.dagster_run
            times = RunTimes(run.job_name, run.run_id, run.status.value, record.create_timestamp.timestamp(),
                             record.start_time, record.end_time)
            starts: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id):
                times.events += 1
                event = entry.dagster_event
                if event is None:
                    continue
                if event.event_type in DEQUEUED and times.dequeued is None:
                    times.dequeued = entry.timestamp
                elif (event.event_type == dg.DagsterEventType.ENGINE_EVENT and times.process_started is None
                      and entry.message.startswith(PROCESS_STARTED)):
                    times.process_started = entry.timestamp
                elif event.event_type == dg.DagsterEventType.STEP_START:
                    starts[event.step_key] = entry.timestamp
                    times.first_step = min(times.first_step or entry.timestamp, entry.timestamp)
                elif event.event_type == dg.DagsterEventType.STEP_FAILURE and times.failure is None:
                    error = event.step_failure_data.error
                    times.failure = f"{event.step_key}: {error.message.strip() if error else entry.message}"
                if event.event_type in STEP_END and event.step_key in starts:
                    times.step_seconds[event.step_key] = entry.timestamp - starts[event.step_key]
                    times.last_step_end = max(times.last_step_end or 0.0, entry.timestamp)
            found.append(times)
        return sorted(found, key=lambda r: r.created)


def breakdown(run: RunTimes, trigger: float) -> dict[str, float | None]:
    def span(a, b):
        return None if a is None or b is None else b - a

    return {
        "sensor wait": span(trigger, run.created),
        "queue": span(run.created, run.dequeued),
        "launch": span(run.dequeued, run.started),
        "process": span(run.dequeued, run.process_started),
        "code load": span(run.process_started, run.started),
        "step start": span(run.started, run.first_step),
        "work": span(run.first_step, run.last_step_end),
        # The steps' own durations, and the rest of the work span: starting the next step
        # (a process of its own under the multiprocess executor).
        "steps": sum(run.step_seconds.values()) if run.step_seconds else None,
        "between": None if run.first_step is None or run.last_step_end is None
        else max(0.0, run.last_step_end - run.first_step - sum(run.step_seconds.values())),
        "tail": span(run.last_step_end, run.ended),
        "total": span(run.created, run.ended),
    }


def trigger_of(run: RunTimes, runs: list[RunTimes], drop: float) -> float:
    """What the run waited for: the latest end of a step (its commit made the work the run is
    for) or of a run (run-status sensors) before it was created, or the drop."""
    ends = [t for r in runs if r is not run for t in (r.ended, r.last_step_end) if t is not None and t <= run.created]
    return max([drop, *ends])


def run_flow(label: str, rows: int, pg: bool, overrides: dict[str, str], timeout: float, seed: int,
             warm_up_rows: int) -> Flow:
    flow = Flow(label, rows)
    databases = PgDatabases() if pg else None
    prefix = f"{NAME}:{os.getpid()}:{uuid.uuid4().hex[:6]}:"
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with tempfile.TemporaryDirectory(prefix=f"{NAME}_") as base_dir:
        base = Path(base_dir)
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_PG_URL"}
        env.update({
            "PORT": str(free_port()),
            "DAGSTER_HOME": str(base / "dagster_home"),
            "ORDERSYS_DATABASE_URL": databases.create("app") if databases else f"sqlite:///{base / 'ordersys.db'}",
            "ORDERSYS_REDIS_URL": REDIS_URL,
            "ORDERSYS_REDIS_PREFIX": prefix,
            "ORDERSYS_INBOX": str(base / "inbox"),
            "ORDERSYS_GATEWAY_SEED": "11",
        })
        instance_env = {}
        if databases:
            # dagster-postgres is written for psycopg2 (stack.sh adds the driver the same way).
            instance_env["DAGSTER_PG_URL"] = databases.create("dagster").replace(
                "postgresql://", "postgresql+psycopg2://", 1)
            env.update(instance_env)
        if overrides.pop(BASELINE, None):
            env.update(baseline_env(base))
        env.update(overrides)
        engine = get_engine(env["ORDERSYS_DATABASE_URL"])
        stack = [str(ROOT / "scripts/stack.sh")]
        try:
            ordersys(env, "db", "upgrade")
            ordersys(env, "catalog", "generate", "--out", str(base / "catalog.csv"), "--stock", "100000")
            ordersys(env, "catalog", "load", str(base / "catalog.csv"))
            file = base / "orders.csv"
            ordersys(env, "generate-orders", "--rows", str(rows), "--out", str(file), "--seed", str(seed))
            days = file_days(file)
            started = time.time()
            up = subprocess.run([*stack, "up"], env=env, capture_output=True, text=True, timeout=240)
            if up.returncode:
                flow.error = f"stack did not start:\n{up.stdout}\n{up.stderr}"
                return flow
            print(f"[{label}] stack up in {time.time() - started:.1f}s; dropping {rows:,} lines "
                  f"({len(days)} days)", flush=True)
            (base / "inbox").mkdir(exist_ok=True)
            store = AnalyticsStore(client, lambda name: prefix + name)
            if warm_up_rows:
                # A stack that has been up a while: it has run every stage once (the run
                # launcher's fork server is warm) and nothing is in flight.
                warm = Flow("warm-up", warm_up_rows)
                warm_file = base / "warm-up.csv"
                ordersys(env, "generate-orders", "--rows", str(warm_up_rows), "--out", str(warm_file),
                         "--seed", str(seed + 1000))
                warm.drop = time.time()
                warm_days = file_days(warm_file)
                warm_file.rename(base / "inbox" / "warm-up.csv")
                watch(warm, env, engine, store, warm_days, "warm-up.csv", warm.drop + timeout)
                if warm.error or wait_for_runs(base / "dagster_home", instance_env, warm.drop + timeout):
                    flow.error = f"the warm-up file did not finish: {warm.error or 'runs still in flight'}"
                    return flow
                print(f"[{label}] warm-up file of {warm_up_rows} lines done in {time.time() - warm.drop:.1f}s",
                      flush=True)
            time.sleep(3)  # let the daemon's sensor ticks pass, as on a stack that has been up a while
            flow.drop = time.time()
            file.rename(base / "inbox" / "shop.csv")
            watch(flow, env, engine, store, days, "shop.csv", flow.drop + timeout)
            # The milestones are reached before the last runs end (the KPI run still writes its
            # events and the leaderboard): stopping the stack now would interrupt them.
            left = wait_for_runs(base / "dagster_home", instance_env, flow.drop + timeout)
            if left:
                flow.error = (flow.error or "") + f"; {left} run(s) still in flight when the stack stopped"
        finally:
            subprocess.run([*stack, "down"], env=env, capture_output=True, timeout=120)
            try:
                flow.runs = [r for r in read_runs(base / "dagster_home", instance_env) if r.created >= flow.drop]
            except Exception as exc:  # noqa: BLE001 - the figures already measured still print
                flow.error = (flow.error or "") + f"; run records unreadable: {exc}"
            engine.dispose()
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
            if databases:
                databases.drop_all()
    return flow


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_flow(flow: Flow) -> None:
    print(f"\n== {flow.label}: {flow.rows:,} lines, {flow.orders:,} orders"
          + (f"  [{flow.error}]" if flow.error else ""))
    print("run                     created  sensor wait  queue  launch (process  code load)  step start   steps  between"
          "   tail   total  events")
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for run in flow.runs:
        parts = breakdown(run, trigger_of(run, flow.runs, flow.drop))
        print(f"{run.job[:22]:<22} {run.created - flow.drop:8.1f} {fmt(parts['sensor wait']):>12} {fmt(parts['queue']):>6} {fmt(parts['launch']):>7} "
              f"{fmt(parts['step start']):>11} {fmt(parts['steps']):>7} {fmt(parts['between']):>8} {fmt(parts['tail']):>6} "
              f"{fmt(parts['total']):>7} {run.events:7d}  {run.status}")
        for name, value in parts.items():
            if value is not None:
                totals[run.job][name] += value
        totals[run.job]["runs"] += 1
        if run.failure:
            print(f"    failed: {run.failure[:400]}")
    print("per job (sums over its runs):")
    for job, parts in totals.items():
        overhead = parts["total"] - parts["steps"]
        print(f"  {job:<22} {int(parts['runs'])} run(s): sensor wait {parts['sensor wait']:.1f}s, queue {parts['queue']:.1f}s, "
              f"launch {parts['launch']:.1f}s (process {parts['process']:.1f}s, code load {parts['code load']:.1f}s), "
              f"step start {parts['step start']:.1f}s, steps {parts['steps']:.1f}s, between steps {parts['between']:.1f}s, "
              f"tail {parts['tail']:.1f}s; overhead beyond the steps {overhead / parts['runs']:.1f}s per run")


def print_milestones(flows: list[Flow]) -> None:
    print("\nseconds after the drop       " + "".join(f"{f.label[:24]:>26}" for f in flows))
    for name in flows[0].milestones:
        print(f"  {name:<26} " + "".join(f"{fmt(f.milestones.get(name)):>26}" for f in flows))
    print(f"  {'runs':<26} " + "".join(f"{len(f.runs):>26}" for f in flows))


BASELINE = "baseline"
# The settings before the latency work, where a setting can bring them back.
BASELINE_SETTINGS = {
    "ORDERSYS_EXECUTOR": "multiprocess",
    "ORDERSYS_SENSOR_INTERVAL": "30",
    "ORDERSYS_SETTLE_IN_WORKFLOW": "false",
    "DAGSTER_EVENT_BATCH_SIZE": "0",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "false",
}


def without_blocks(instance_yaml: str, *names: str) -> str:
    """The instance file without its top-level blocks `names` (Dagster's defaults instead)."""
    for name in names:
        instance_yaml = re.sub(rf"^{name}:\n(?:[ \t]+.*\n)+", "", instance_yaml, flags=re.M)
    return instance_yaml


def baseline_env(base: Path) -> dict[str, str]:
    """BASELINE_SETTINGS, and an instance file without the run queue's 1 s loop and with Dagster's
    default run launcher."""
    instance = base / "dagster.yaml"
    instance.write_text(without_blocks((ROOT / "dagster.yaml").read_text(), "run_queue", "run_launcher"))
    return {"STACK_INSTANCE_FILE": str(instance), **BASELINE_SETTINGS}


def parse_variant(text_: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in text_.split(",") if item)
    if not pairs or any(not k.strip() for k in pairs):
        raise argparse.ArgumentTypeError(f"{text_!r}: expected NAME=VALUE[,NAME=VALUE]")
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL Dagster instance and ordersys database")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="environment overrides for a further flow, e.g. ORDERSYS_SENSOR_INTERVAL=10")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the baseline (the settings before)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per flow")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--warm-up-rows", type=int, default=20,
                        help="lines of a first file the stack finishes before the timed drop (0: none)")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"instance: {'PostgreSQL' if args.pg else 'SQLite'}; load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} on {os.cpu_count()} CPUs (other work on the machine slows every figure)")
    plans = ([] if args.no_baseline else [(BASELINE, {BASELINE: "1"})]) + [("defaults", {})] + [
        (",".join(f"{k}={v}" for k, v in v.items()), v) for v in args.variant]
    flows = []
    for label, overrides in plans:
        flow = run_flow(label, args.rows, args.pg, overrides, args.timeout, args.seed, args.warm_up_rows)
        flows.append(flow)
        print_flow(flow)
    print_milestones(flows)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    return 1 if any(f.error for f in flows) else 0


if __name__ == "__main__":
    sys.exit(main())
