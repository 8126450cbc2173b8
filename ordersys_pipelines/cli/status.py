"""`ordersys status`: the terminal twin of Horizon's dashboard.

Per stage the backlog, the work of the last hour, how long the oldest item has waited, and the
runs queued and running; the recent failures with their cause in one line (failures that a
re-execution or a later run has healed drop out); the latest files with their reject counts.
It reads the database and the instance's run storage directly and imports no Dagster
(`cli/instance_runs.py`), so it answers in a fraction of a second.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import click
from rich.table import Table
from sqlalchemy import exc

from ordersys_pipelines.cli import instance_runs
from ordersys_pipelines.cli.console import console, plain_text
from ordersys_pipelines.db.engine import get_engine, reading, utcnow
from ordersys_pipelines.domain.backlog import STAGES, StageFigures, read_stage_figures
from ordersys_pipelines.domain.failures import Failure, recent_failures
from ordersys_pipelines.domain.imports.report import FileRecord, recent_files
from ordersys_pipelines.settings import get_settings


@dataclass
class StatusReport:
    now: datetime
    since: datetime
    stages: list[StageFigures]
    queued: dict[str, int]
    running: dict[str, int]
    failures: list[Failure]
    files: list[FileRecord]
    instance: str  # where the runs were read from, or why they were not
    runs_read: bool
    reexecutable_runs: int = 0  # failed runs a re-execution may heal (not refused input)


def _read_runs(report_since: datetime, now: datetime, limit: int) -> tuple[instance_runs.InstanceRuns | None, str]:
    home = instance_runs.instance_home()
    if home is None:
        return None, "no Dagster instance (DAGSTER_HOME is not set and there is no .dagster_home here): runs not shown"
    try:
        runs = instance_runs.read_instance_runs(
            home, since_epoch=_epoch(report_since), now_epoch=_epoch(now), failure_limit=limit)
    except (instance_runs.UnreadableInstance, exc.SQLAlchemyError, OSError) as error:
        return None, f"Dagster instance in {home} not read: {instance_runs.one_line(str(error))}"
    return runs, f"Dagster instance in {home} ({runs.location})"


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=instance_runs.UTC).timestamp()


def build_report(since_hours: float, limit: int) -> StatusReport:
    settings = get_settings()
    now = utcnow()
    since = now - timedelta(hours=since_hours)
    try:
        with reading(get_engine(settings.database_url)) as conn:
            stages = read_stage_figures(conn, now, settings.inbox)
            failures = recent_failures(conn, since, limit)
            files = recent_files(conn, limit)
    except exc.OperationalError as error:
        raise click.ClickException(
            f"the database cannot be read ({instance_runs.one_line(str(error.orig))}); "
            "is it there and up to date (`ordersys db upgrade`)?") from None
    except exc.ProgrammingError as error:
        raise click.ClickException(
            f"the database has no schema yet ({instance_runs.one_line(str(error.orig))}): run `ordersys db upgrade`"
        ) from None
    runs, where = _read_runs(since, now, limit)
    if runs is not None:
        stages.append(StageFigures("analytics", "refresh runs", runs.analytics_owed, runs.analytics_done_last_hour,
                                   instance_runs.as_datetime(runs.analytics_owed_since),
                                   note="backlog: work runs not yet followed by a refresh"))
        failures += [
            Failure(f"run of {run.job_name}", run.run_id + (f" ({run.subject})" if run.subject else ""),
                    run.cause + (" [being retried]" if run.retrying else "")
                    + (" [bad input: fix it, re-executing fails the same way]" if run.data_failure else ""),
                    1, instance_runs.as_datetime(run.ended_at))
            for run in runs.failed
        ]
        failures.sort(key=lambda f: f.latest_at or datetime.min, reverse=True)
    else:
        stages.append(StageFigures("analytics", "refresh runs", None, None, None, note="known to the Dagster instance"))
    return StatusReport(now, since, stages, runs.queued if runs else {}, runs.running if runs else {},
                        failures, files, where, runs is not None,
                        sum(not run.data_failure for run in runs.failed) if runs else 0)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} days"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def print_report(report: StatusReport) -> None:
    out = console()
    stages = Table(title=f"Stages ({_when(report.now)} UTC)", title_justify="left")
    for column, justify in (("stage", "left"), ("backlog", "right"), ("done, last hour", "right"),
                            ("oldest waiting", "right"), ("runs queued", "right"), ("running", "right"),
                            ("", "left")):
        stages.add_column(column, justify=justify)
    for figures in sorted(report.stages, key=lambda f: STAGES.index(f.stage)):
        queued = report.queued.get(figures.stage, 0) if report.runs_read else None
        running = report.running.get(figures.stage, 0) if report.runs_read else None
        stages.add_row(
            figures.stage, f"{_number(figures.backlog)} {figures.unit}" if figures.backlog is not None else "-",
            _number(figures.done_last_hour), _age(figures.oldest_waiting_seconds(report.now)),
            _number(queued), _number(running), figures.note,
        )
    out.print(stages)
    out.print(plain_text(report.instance), style="dim")

    hours = (report.now - report.since).total_seconds() / 3600
    if report.failures:
        failures = Table(title=f"Failures in the last {hours:g} h (newest first)", title_justify="left")
        failures.add_column("latest (UTC)", no_wrap=True)
        failures.add_column("what", no_wrap=True)
        failures.add_column("count", justify="right")
        failures.add_column("file / example", overflow="fold")
        failures.add_column("cause", overflow="fold", ratio=2)
        for failure in report.failures:
            failures.add_row(_when(failure.latest_at), failure.kind, f"{failure.count:,}", plain_text(failure.subject),
                             plain_text(failure.cause))
        out.print(failures)
        if report.reexecutable_runs:
            out.print("[dim]Re-execute a failed run: ordersys runs reexecute RUN_ID[/]")
    else:
        out.print(f"No failures in the last {hours:g} h.")

    if report.files:
        files = Table(title="Latest files", title_justify="left")
        for column, justify in (("file", "left"), ("status", "left"), ("rows", "right"), ("imported", "right"),
                                ("rejected", "right"), ("finished (UTC)", "left")):
            files.add_column(column, justify=justify, overflow="fold")
        for record in report.files:
            files.add_row(plain_text(record.name), record.status, _number(record.rows_read), _number(record.lines_imported),
                          _number(record.rejected), _when(record.finished_at))
        out.print(files)
        out.print("[dim]A file's rejects: ordersys imports show FILE (name, content hash or id)[/]")


def _json(report: StatusReport) -> str:
    def value(item):
        if isinstance(item, datetime):
            return item.isoformat()
        raise TypeError(type(item))

    data = asdict(report)
    for stage, figures in zip(data["stages"], report.stages, strict=True):
        stage["oldest_waiting_seconds"] = figures.oldest_waiting_seconds(report.now)
        stage["runs_queued"] = report.queued.get(figures.stage, 0)
        stage["runs_running"] = report.running.get(figures.stage, 0)
    return json.dumps(data, default=value, indent=2)


@click.command()
@click.option("--since", "since_hours", default=24.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Failures of the last this many hours.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1),
              help="Failures of each kind and files shown.")
@click.option("--json", "as_json", is_flag=True, help="The same figures as JSON.")
def status(since_hours: float, limit: int, as_json: bool) -> None:
    """Per stage: backlog, done in the last hour, oldest waiting, runs queued and running; recent
    failures with their cause; the latest files with their rejects."""
    started = time.perf_counter()
    report = build_report(since_hours, limit)
    if as_json:
        click.echo(_json(report))
        return
    print_report(report)
    console().print(f"[dim]answered in {time.perf_counter() - started:.2f} s[/]")
