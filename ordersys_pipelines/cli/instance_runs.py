"""The runs `ordersys status` shows, read straight from the Dagster instance's run storage.

Importing Dagster costs a second or more here, before any query; status must answer well under
that. So this module reads the instance's `runs`, `run_tags` and `event_logs` tables with
SQLAlchemy Core and a few bounded queries, and never imports Dagster or loads the code
location. Those tables are Dagster's storage layout (the same since Dagster 0.13, see
`dagster/_core/storage/runs/schema.py`); a test reads the same instance through Dagster's own
API and compares, so an upgrade that changes the layout fails the test, not the operator.

Storage is found from `$DAGSTER_HOME/dagster.yaml` the way the project writes it: no storage
block means SQLite files under DAGSTER_HOME (runs in `history/runs.db`, each run's events in
`history/runs/<run_id>.db`); `storage: postgres: postgres_url` (a value or `env:`) means one
PostgreSQL database for both.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    create_engine,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Engine

from ordersys_pipelines.domain.failures import DATA_FAILURE, FAILURE_KIND, one_line

DEFAULT_HOME = ".dagster_home"  # where `make up` and `make demo` keep the instance
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "MANAGED", "STARTING", "STARTED", "CANCELING")
QUEUED = ("QUEUED", "NOT_STARTED")
# Jobs of each stage, for runs launched without the `ordersys/stage` tag.
JOB_STAGES = {
    "orders_import": "import", "inventory_load": "import", "order_workflow": "workflow",
    "payment_settlement": "settlement", "refund_processing": "refunds", "refund_request": "refunds",
    "notification_dispatch": "notifications", "analytics_refresh": "analytics",
}
# The jobs whose successful runs the analytics refresh follows (assets/analytics.WATCHED_JOBS).
ANALYTICS_WATCHED = ("order_workflow", "payment_settlement", "refund_processing")
STAGE_TAG, FILE_TAG = "ordersys/stage", "ordersys/file"
ROOT_TAG, PARENT_TAG, PARTITION_TAG = "dagster/root_run_id", "dagster/parent_run_id", "dagster/partition"
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
WILL_RETRY_TAG = "dagster/will_retry"
TAGS_READ = (STAGE_TAG, FILE_TAG, ROOT_TAG, PARENT_TAG, PARTITION_TAG, RANGE_START_TAG, RANGE_END_TAG, WILL_RETRY_TAG)

_meta = MetaData()
runs_table = Table(
    "runs", _meta, Column("id", Integer, primary_key=True), Column("run_id", String(255)),
    Column("pipeline_name", Text), Column("status", String(63)), Column("start_time", Float), Column("end_time", Float),
    Column("run_body", Text),
)
# A run launched from the catalog: no stage tag until its first step starts, but the concurrency
# pools of its steps (named after their stage, assets/stages.py) are in the stored run.
ASSET_JOB = "__ASSET_JOB"
STAGE_POOLS = ("import", "analytics")
run_tags_table = Table("run_tags", _meta, Column("id", Integer, primary_key=True), Column("run_id", String(255)),
                       Column("key", Text), Column("value", Text))
event_logs_table = Table("event_logs", _meta, Column("id", Integer, primary_key=True), Column("run_id", String(255)),
                         Column("event", Text), Column("dagster_event_type", Text))


class UnreadableInstance(RuntimeError):
    """The instance's storage is of a kind this reader does not know; the UI shows its runs."""


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    job_name: str
    stage: str
    ended_at: float | None  # epoch seconds
    subject: str  # partition, day range or file, when the run had one
    cause: str  # the first line of the failing step's error
    retrying: bool  # a retry or re-execution of it is queued or running
    data_failure: bool = False  # a step refused its input: re-executing fails the same way


@dataclass
class InstanceRuns:
    location: str
    queued: dict[str, int] = field(default_factory=dict)  # per stage
    running: dict[str, int] = field(default_factory=dict)
    failed: list[FailedRun] = field(default_factory=list)  # not healed since, newest first
    analytics_done_last_hour: int = 0
    analytics_owed: int = 0  # successful work runs not yet followed by a successful refresh
    analytics_owed_since: float | None = None


@dataclass(frozen=True)
class _Run:
    seq: int
    run_id: str
    job_name: str
    status: str
    start_time: float | None
    end_time: float | None
    tags: dict[str, str]

    pools: tuple[str, ...] = ()

    @property
    def stage(self) -> str:
        pooled = next((pool for pool in STAGE_POOLS if pool in self.pools), None)
        return self.tags.get(STAGE_TAG) or JOB_STAGES.get(self.job_name) or pooled or "other"

    @property
    def root(self) -> str:
        return self.tags.get(ROOT_TAG) or self.run_id

    @property
    def subject(self) -> str:
        if RANGE_START_TAG in self.tags:
            return f"{self.tags[RANGE_START_TAG]}..{self.tags.get(RANGE_END_TAG, '')}"
        return self.tags.get(PARTITION_TAG) or self.tags.get(FILE_TAG) or ""

    def heals(self, failed: _Run) -> bool:
        """Does this later run do what the failed one did not: a re-execution of it (same root),
        or a run of the same stage over the same partition, day range (or a wider one) or file?"""
        if self.seq <= failed.seq:
            return False
        if self.root == failed.root or self.tags.get(PARENT_TAG) == failed.run_id:
            return True
        if self.stage != failed.stage:
            return False
        mine, theirs = self.tags, failed.tags
        for tag in (PARTITION_TAG, FILE_TAG):
            if tag in theirs and mine.get(tag) == theirs[tag]:
                return True
        if RANGE_START_TAG in theirs and RANGE_START_TAG in mine:
            return (mine[RANGE_START_TAG] <= theirs[RANGE_START_TAG]
                    and mine.get(RANGE_END_TAG, "") >= theirs.get(RANGE_END_TAG, ""))
        return False


def instance_home() -> Path | None:
    """DAGSTER_HOME, or the `.dagster_home` of this folder when it exists; None: no instance."""
    configured = os.environ.get("DAGSTER_HOME")
    if configured:
        return Path(configured)
    default = Path(DEFAULT_HOME)
    return default if (default / "history").is_dir() or (default / "dagster.yaml").is_file() else None


def _setting(value) -> str | None:
    if isinstance(value, dict) and "env" in value:
        return os.environ.get(value["env"])
    return value


class _Storage:
    """Engines of the run storage and of a run's event log."""

    def __init__(self, home: Path):
        config_path = home / "dagster.yaml"
        config = (yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None) or {}
        unknown = {"run_storage", "event_log_storage"} & config.keys()
        storage = config.get("storage") or {}
        self._sqlite_dir: Path | None = None
        if unknown or set(storage) - {"postgres", "sqlite"}:
            raise UnreadableInstance(f"the storage configured in {config_path} is not read by `ordersys status`")
        if "postgres" in storage:
            url = _setting((storage["postgres"] or {}).get("postgres_url"))
            if not url:
                raise UnreadableInstance(f"{config_path}: storage.postgres needs postgres_url (or its env variable)")
            self.location = "PostgreSQL"
            self.runs = create_engine(url, pool_pre_ping=False)
        else:
            base = Path(_setting((storage.get("sqlite") or {}).get("base_dir")) or home)
            self._sqlite_dir = base / "history"
            self.location = f"SQLite in {base}"
            self.runs = create_engine(f"sqlite:///{self._sqlite_dir / 'runs.db'}")

    def events(self, run_id: str) -> Engine | None:
        if self._sqlite_dir is None:
            return self.runs
        path = self._sqlite_dir / "runs" / f"{run_id}.db"
        return create_engine(f"sqlite:///{path}") if path.is_file() else None

    def has_runs(self) -> bool:
        return self._sqlite_dir is None or (self._sqlite_dir / "runs.db").is_file()


def _pools(run_body: str | None) -> tuple[str, ...]:
    """The concurrency pools in a stored run (Dagster's serialized DagsterRun), or none."""
    try:
        concurrency = (json.loads(run_body) if run_body else {}).get("run_op_concurrency") or {}
        pools = (concurrency.get("all_pools") or {}).get("__set__") or []
    except (ValueError, AttributeError):
        return ()
    return tuple(str(pool) for pool in pools)


def _runs(conn, where, limit: int) -> list[_Run]:
    runs = runs_table.c
    # Only a catalog run's body is read (the rest are classified by their tag or job name).
    body = case((runs.pipeline_name == ASSET_JOB, runs.run_body), else_=None).label("run_body")
    rows = conn.execute(
        select(runs.id, runs.run_id, runs.pipeline_name, runs.status, runs.start_time, runs.end_time, body)
        .where(where).order_by(runs.id.desc()).limit(limit)
    ).all()
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    ids = [row.run_id for row in rows]
    for start in range(0, len(ids), 500):
        for run_id, key, value in conn.execute(
            select(run_tags_table.c.run_id, run_tags_table.c.key, run_tags_table.c.value).where(
                run_tags_table.c.run_id.in_(ids[start : start + 500]), run_tags_table.c.key.in_(TAGS_READ))
        ):
            tags[run_id][key] = value
    return [_Run(row.id, row.run_id, row.pipeline_name, row.status, row.start_time, row.end_time,
                 tags.get(row.run_id, {}), _pools(row.run_body)) for row in rows]


def _error_cause(error: dict | None) -> str | None:
    """The innermost cause's message: Dagster wraps the op's exception in its own."""
    while isinstance(error, dict) and isinstance(error.get("cause"), dict):
        error = error["cause"]
    return error.get("message") if isinstance(error, dict) else None


def _marked_data_failure(failure_data: dict) -> bool:
    """The step's failure metadata says it refused its input (step_retries marks it so); the
    stored form is a list of metadata entries, each with its label and entry data."""
    for entry in failure_data.get("metadata_entries") or ():
        if isinstance(entry, dict) and entry.get("label") == FAILURE_KIND:
            return (entry.get("entry_data") or {}).get("text") == DATA_FAILURE
    return False


def _failure_line(storage: _Storage, run_id: str) -> tuple[str, bool]:
    """The run's cause in one line, and whether it is a data failure."""
    engine = storage.events(run_id)
    if engine is None:
        return "(no event log)", False
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(event_logs_table.c.dagster_event_type, event_logs_table.c.event)
                .where(event_logs_table.c.run_id == run_id,
                       event_logs_table.c.dagster_event_type.in_(("STEP_FAILURE", "PIPELINE_FAILURE")))
                .order_by(event_logs_table.c.id).limit(5)
            ).all()
    finally:
        if engine is not storage.runs:
            engine.dispose()
    # The failing step says why; the run's own failure event only says which steps failed.
    rows.sort(key=lambda row: row[0] != "STEP_FAILURE")
    for _, body in rows:
        try:
            entry = json.loads(body)
        except ValueError:
            continue
        dagster_event = entry.get("dagster_event") or {}
        data = dagster_event.get("event_specific_data") or {}
        step = dagster_event.get("step_key")
        failure_data = data.get("user_failure_data") or {}
        cause = (failure_data.get("description") or _error_cause(data.get("error")) or dagster_event.get("message")
                 or entry.get("user_message"))
        if cause:
            return one_line(f"{step}: {cause}" if step else cause), _marked_data_failure(failure_data)
    return "(no error recorded)", False


def read_instance_runs(home: Path, *, since_epoch: float, now_epoch: float, failure_limit: int = 10) -> InstanceRuns:
    """Runs queued and running per stage, failed runs since `since_epoch` that nothing has healed
    (with their cause), and the analytics refresh's work. Raises UnreadableInstance."""
    storage = _Storage(home)
    view = InstanceRuns(location=storage.location)
    if not storage.has_runs():
        return view
    try:
        with storage.runs.connect() as conn:
            for run in _runs(conn, runs_table.c.status.in_(IN_FLIGHT), 1000):
                counts = view.queued if run.status in QUEUED else view.running
                counts[run.stage] = counts.get(run.stage, 0) + 1
            failed = _runs(conn, and_(runs_table.c.status == "FAILURE", runs_table.c.end_time >= since_epoch),
                           failure_limit * 5)
            later = _later_runs(conn, failed)
            _analytics_figures(conn, view, now_epoch)
    finally:
        storage.runs.dispose()

    for run in failed:
        if any(other.status == "SUCCESS" and other.heals(run) for other in later):
            continue
        retrying = run.tags.get(WILL_RETRY_TAG) == "true" or any(
            other.status in IN_FLIGHT and other.heals(run) for other in later)
        cause, data_failure = _failure_line(storage, run.run_id)
        view.failed.append(FailedRun(run.run_id, run.job_name, run.stage, run.end_time, run.subject, cause,
                                     retrying, data_failure))
        if len(view.failed) == failure_limit:
            break
    return view


def _later_runs(conn, failed: list[_Run]) -> list[_Run]:
    """The runs after the failed ones that may heal them: the failed runs' re-executions and
    retries, and runs of the same partitions, files or day ranges (not every run since)."""
    if not failed:
        return []
    tag = run_tags_table.c
    wanted = [
        and_(tag.key == ROOT_TAG, tag.value.in_({r.root for r in failed})),
        and_(tag.key == PARENT_TAG, tag.value.in_({r.run_id for r in failed})),
    ]
    for key in (PARTITION_TAG, FILE_TAG):
        values = {r.tags[key] for r in failed if key in r.tags}
        if values:
            wanted.append(and_(tag.key == key, tag.value.in_(values)))
    starts = [r.tags[RANGE_START_TAG] for r in failed if RANGE_START_TAG in r.tags]
    if starts:
        wanted.append(and_(tag.key == RANGE_START_TAG, tag.value <= max(starts)))
    candidates = select(tag.run_id).where(or_(*wanted))
    return _runs(conn, and_(runs_table.c.id > min(r.seq for r in failed), runs_table.c.run_id.in_(candidates),
                            runs_table.c.status.in_(("SUCCESS", *IN_FLIGHT))), 5000)


def _analytics_figures(conn, view: InstanceRuns, now_epoch: float) -> None:
    """Refresh runs done in the last hour, and the successful work runs that finished after the
    start of the latest successful refresh (their days are still to be refreshed)."""
    runs = runs_table.c
    analytics = or_(runs.pipeline_name == "analytics_refresh", runs.run_id.in_(
        select(run_tags_table.c.run_id).where(run_tags_table.c.key == STAGE_TAG, run_tags_table.c.value == "analytics")))
    view.analytics_done_last_hour = conn.execute(
        select(func.count()).where(runs.status == "SUCCESS", runs.end_time >= now_epoch - 3600, analytics)
    ).scalar_one()
    last_refresh = conn.execute(select(func.max(runs.start_time)).where(runs.status == "SUCCESS", analytics)).scalar()
    owed, since = conn.execute(
        select(func.count(), func.min(runs.end_time)).where(
            runs.status == "SUCCESS", runs.pipeline_name.in_(ANALYTICS_WATCHED), runs.end_time > (last_refresh or 0))
    ).one()
    view.analytics_owed, view.analytics_owed_since = int(owed), since


def as_datetime(epoch: float | None) -> datetime | None:
    """Naive UTC, the form the database figures use."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None) if epoch is not None else None
