"""`ordersys process`: run every stage that has pending work, in-process, until nothing is left,
then refresh the KPI days and the leaderboard that work touched.

The sensors are the production path; this is the same jobs run one after another in this
process (each run recorded in the instance, so the UI shows them), for the demo and the tests;
with a backlog of more than one workflow batch, the notifications are sent by a second process
alongside (cli/alongside.py).
Stages are a list: another area appends its own `Stage` (refunds, notifications, analytics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

import click
import dagster as dg
from sqlalchemy import func, select

from ordersys_pipelines.assets.analytics import WATCHED_JOBS
from ordersys_pipelines.cli import runtime
from ordersys_pipelines.cli.alongside import Alongside, Finished
from ordersys_pipelines.cli.analytics import refresh_days
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain import claims
from ordersys_pipelines.domain.analytics.freshness import touched_days
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.dispatch import due_summary
from ordersys_pipelines.domain.orders import reservation
from ordersys_pipelines.domain.orders.states import CREATED, RESERVED
from ordersys_pipelines.domain.payments import settlement
from ordersys_pipelines.domain.refunds.processing import backlog as refund_backlog
from ordersys_pipelines.jobs.common import SUMMARY_KEY, step_output_metadata
from ordersys_pipelines.jobs.notifications import dispatch_notifications, notification_dispatch
from ordersys_pipelines.jobs.refunds import refund_processing
from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.jobs.workflow import order_workflow, order_workflow_settling
from ordersys_pipelines.settings import Settings


@dataclass(frozen=True)
class Stage:
    name: str
    job: dg.JobDefinition
    # Is there work this stage's job would do right now?
    has_pending_work: Callable[[Settings], bool]
    # Run config for one run (batch size ...); None: the job's defaults.
    run_config: Callable[[Settings], dict] | None = None
    # When work will appear without anyone acting (delayed callbacks, leases); None: never.
    next_due: Callable[[Settings], datetime | None] | None = None
    # The job for these settings, when it is not always `job` (the workflow settles or not).
    job_for: Callable[[Settings], dg.JobDefinition] | None = None
    # Did a run take anything? None: every run that found pending work does.
    took: Callable[[dg.ExecuteInProcessResult], bool] | None = None

    def job_of(self, settings: Settings) -> dg.JobDefinition:
        return self.job_for(settings) if self.job_for else self.job

    def took_work(self, result: dg.ExecuteInProcessResult) -> bool:
        return self.took(result) if self.took else True


def _batch_config(ops: list[str]) -> Callable[[Settings], dict]:
    return lambda settings: {"ops": {op: {"config": {"batch_size": settings.batch_size}} for op in ops}}


def _workflow_pending(settings: Settings) -> bool:
    with get_engine(settings.database_url).connect() as conn:
        return reservation.pending(conn, cap=1) > 0


def _workflow_next_due(settings: Settings) -> datetime | None:
    """Orders another (perhaps crashed) run has claimed come back when the lease ends."""
    with get_engine(settings.database_url).connect() as conn:
        return conn.execute(
            select(func.min(orders.c.claim_expires_at)).where(
                orders.c.status.in_([CREATED, RESERVED]), ~claims.claimable(orders)
            )
        ).scalar()


def _settlement_pending(settings: Settings) -> bool:
    with get_engine(settings.database_url).connect() as conn:
        return settlement.pending(conn, settings.payment_timeout_seconds, cap=1) > 0


def _settlement_next_due(settings: Settings) -> datetime | None:
    with get_engine(settings.database_url).connect() as conn:
        return settlement.next_due(conn, settings.payment_timeout_seconds)


def _refunds_pending(settings: Settings) -> bool:
    with get_engine(settings.database_url).connect() as conn:
        return refund_backlog(conn).due > 0


def _refunds_next_due(settings: Settings) -> datetime | None:
    with get_engine(settings.database_url).connect() as conn:
        return refund_backlog(conn).next_due_at


def _notifications_pending(settings: Settings) -> bool:
    """Due notifications a dispatch would take: not those of a channel whose breaker is open
    and not yet due for a probe (a run hands them back untried, and another round would too)."""
    with get_engine(settings.database_url).connect() as conn:
        return due_summary(conn, config=NotifierConfig.from_settings(settings))[0] > 0


def _dispatch_took(result: dg.ExecuteInProcessResult) -> bool:
    """Rows that looked due may be locked by another dispatcher, which takes them."""
    return bool(step_output_metadata(result, dispatch_notifications.name).get("claimed"))


def _workflow_job(settings: Settings) -> dg.JobDefinition:
    """As the Definitions hold it: with the callbacks already due applied in the same run."""
    return order_workflow_settling if settings.settle_in_workflow else order_workflow


def _workflow_config(settings: Settings) -> dict:
    ops = ["reserve_stock", "initiate_payments"] + (["apply_callbacks"] if settings.settle_in_workflow else [])
    return _batch_config(ops)(settings)


NOTIFICATIONS = "notifications"

STAGES: list[Stage] = [
    Stage("workflow", order_workflow, _workflow_pending, _workflow_config, _workflow_next_due,
          job_for=_workflow_job),
    Stage("settlement", payment_settlement, _settlement_pending,
          _batch_config(["apply_callbacks", "expire_overdue_payments"]), _settlement_next_due),
    Stage("refunds", refund_processing, _refunds_pending, next_due=_refunds_next_due),
    # Notifications are sent last in a round, after the stages that write them.
    Stage(NOTIFICATIONS, notification_dispatch, _notifications_pending, took=_dispatch_took),
]


def stage_named(name: str) -> Stage:
    [stage] = [stage for stage in STAGES if stage.name == name]
    return stage


def summary(result: dg.ExecuteInProcessResult) -> str:
    """The ops' headline counts from their output metadata (the workflow jobs' `summary`)."""
    parts = [step_output_metadata(result, node.name).get(SUMMARY_KEY)
             for node in result.job_def.graph.nodes_in_topological_order]
    return ", ".join(part for part in parts if part) or "done"


def run_line(label: str, stage: Stage, result: dg.ExecuteInProcessResult, seconds: float) -> str:
    """The progress line of one run: `[label] stage run id  what it did  (seconds)`."""
    outcome = summary(result) if result.success else "FAILED"
    return f"[{label}] {stage.name:<12} run {result.run_id[:8]}  {outcome}  ({seconds:.2f} s)"


def touched_spans(settings: Settings, finished: list[tuple[str, str]]) -> list[tuple[date, date]]:
    """The KPI days the finished runs changed (as the `analytics_after_work` sensor finds them
    for one run), as at most two spans clamped to the partitions that exist: the span of the
    orders' and refunds' days, and today's (notifications count on the day they were sent)
    unless it lies within 31 days of the first. Empty: no day changed."""
    tz = settings.tz
    today = datetime.now(tz).date()
    work_days: list[date] = []
    notified = False
    with get_engine(settings.database_url).connect() as conn:
        for job_name, run_id in finished:
            if job_name in WATCHED_JOBS:
                touched = touched_days(conn, run_id, tz)
                work_days += [touched.first, touched.last] if touched else []
            notified = notified or job_name == notification_dispatch.name
    spans = [(min(work_days), max(work_days))] if work_days else []
    if notified:
        if spans and (today - spans[0][1]).days <= 31:
            spans[0] = (spans[0][0], max(spans[0][1], today))
        else:
            spans.append((today, today))
    start = date.fromisoformat(settings.kpi_start_date)
    clamped = [(max(first, start), min(last, today)) for first, last in spans]
    return [(first, last) for first, last in clamped if first <= last]


def run_stage(stage: Stage, settings: Settings, instance: dg.DagsterInstance, resources: dict) -> dg.ExecuteInProcessResult:
    run_config = dict(stage.run_config(settings)) if stage.run_config else {}
    # Progress lines are this command's output; the runs' event logs stay in the instance (UI).
    run_config.setdefault("loggers", {"console": {"config": {"log_level": "WARNING"}}})
    return stage.job_of(settings).execute_in_process(
        instance=instance,
        resources=resources,
        run_config=run_config,
        tags={"ordersys/batch_size": str(settings.batch_size), "ordersys/launched_by": "ordersys process"},
        raise_on_error=False,
    )


# Below this many waiting orders the whole backlog takes about as long as the second
# process's start (1.6 s of CPU: Python, Dagster, the code), so the rounds stay in one.
ALONGSIDE_MIN_ORDERS = 1_000


def _alongside(settings: Settings) -> Alongside | None:
    """Notifications sent by a second process while more than one workflow batch waits (a
    round's notifications then overlap the next round's workflow); else none. Not on SQLite:
    its one writer at a time leaves nothing to overlap (measured 0.89-1.11x of one process)."""
    engine = get_engine(settings.database_url)
    if engine.dialect.name == "sqlite":
        return None
    with engine.connect() as conn:
        waiting = reservation.pending(conn, cap=max(settings.batch_size + 1, ALONGSIDE_MIN_ORDERS))
    if waiting <= settings.batch_size or waiting < ALONGSIDE_MIN_ORDERS:
        return None
    return Alongside(NOTIFICATIONS)


class _Rounds:
    """The runs of one `ordersys process`: started here in rounds, or reported by the second
    process; each is counted and printed (unless quiet)."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance, resources: dict, *, quiet: bool,
                 alongside: Alongside | None) -> None:
        self.settings, self.instance, self.resources, self.quiet = settings, instance, resources, quiet
        self.alongside = alongside
        self.stages = [stage for stage in STAGES if alongside is None or stage.name != alongside.stage_name]
        self.runs = 0
        self.finished: list[tuple[str, str]] = []  # (job name, run id) of the successful runs

    def reported(self, run: Finished) -> None:
        self.runs += 1
        if run.success:
            self.finished.append((run.job_name, run.run_id))
        if not self.quiet:
            click.echo(run.line)

    def check_alongside(self) -> None:
        if self.alongside is None:
            return
        for run in self.alongside.collect():
            self.reported(run)
        if failure := self.alongside.failure():
            raise click.ClickException(failure)

    def run(self, stage: Stage, label: str) -> bool:
        """One run of `stage`; did it take any work?"""
        started = time.perf_counter()
        result = run_stage(stage, self.settings, self.instance, self.resources)
        self.runs += 1
        if not result.success:
            raise click.ClickException(f"{stage.name} run {result.run_id} failed; see the run's logs")
        self.finished.append((result.job_def.name, result.run_id))
        if not self.quiet:
            click.echo(run_line(label, stage, result, time.perf_counter() - started))
        self.check_alongside()
        return stage.took_work(result)

    def work(self, max_wait: float) -> None:
        """Rounds of every stage with pending work until none has any (waiting up to
        `max_wait` for work due later); then, with a second process, send beside it."""
        round_no = 0
        while True:
            round_no += 1
            took = [self.run(stage, f"{round_no:>3}") for stage in self.stages
                    if stage.has_pending_work(self.settings)]
            if any(took):
                continue
            due = [d for d in (s.next_due(self.settings) for s in self.stages if s.next_due) if d is not None]
            if not due:
                break
            wait = (min(due) - utcnow()).total_seconds()
            if wait > max_wait:
                click.echo(f"stopping: the next work is due at {min(due):%Y-%m-%d %H:%M:%S} UTC, "
                           f"beyond --max-wait {max_wait:g} s; run `ordersys process` again later")
                break
            if not self.quiet:
                click.echo(f"waiting {max(wait, 0):.1f} s for work due later (delayed payment callbacks)")
            (self.alongside.sleep if self.alongside else time.sleep)(min(max(wait, 0.05), max_wait) + 0.05)
            self.check_alongside()
        if self.alongside is not None:
            stage = stage_named(self.alongside.stage_name)
            while stage.has_pending_work(self.settings) and self.run(stage, "end"):
                pass  # a run that took nothing found the rest held by the second process


@click.command()
@click.option("--max-wait", default=120.0, show_default=True, type=float,
              help="Wait at most this many seconds for work that is due later (delayed callbacks); beyond it, stop.")
@click.option("--quiet", is_flag=True, help="Only the final summary.")
@click.option("--no-analytics", is_flag=True, help="Leave the KPI days and the leaderboard as they are.")
@click.option("--one-process", is_flag=True,
              help="Send the notifications in this process too, after each round (by default a second process "
                   "sends them alongside the workflow while more than one batch of orders waits).")
def process(max_wait: float, quiet: bool, no_analytics: bool = False, one_process: bool = False) -> None:
    """Run every pending stage in-process until nothing is left (the sensors' work, now)."""
    settings = runtime.load_settings(need_redis=not no_analytics)
    instance, resources = runtime.instance(), runtime.resources(settings)
    started = time.perf_counter()
    alongside = None if one_process else _alongside(settings)
    rounds = _Rounds(settings, instance, resources, quiet=quiet, alongside=alongside)
    try:
        rounds.work(max_wait)
    except BaseException as failed:
        if alongside is not None:  # it ends after its current run; what it says goes to stderr
            alongside.finish(rounds.reported, abort=True)
            also = alongside.failure()
            if also and also not in str(failed):
                click.echo(f"also: {also}", err=True)
        raise
    if alongside is not None:  # it sends what is left, then ends
        alongside.finish(rounds.reported)
    rounds.check_alongside()
    runs, finished = rounds.runs, rounds.finished
    if finished and not no_analytics:
        spans = touched_spans(settings, finished) or [(None, None)]
        if not quiet:
            days = ", ".join(f"{first} .. {last}" for first, last in spans if first) or "none"
            click.echo(f"analytics: KPI days {days} and the leaderboard")
        for first, last in spans:
            refresh_days(settings, first, last)
    with get_engine(settings.database_url).connect() as conn:
        counts = dict(conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status)).all())
    states = ", ".join(f"{status} {count:,}" for status, count in sorted(counts.items())) or "no orders"
    click.echo(f"done: {runs} run(s) in {time.perf_counter() - started:.1f} s; orders: {states}")
