"""`ordersys status`: the backlog of every stage and the latest runs, like Horizon's dashboard."""

from __future__ import annotations

import click
import dagster as dg
from rich.console import Console
from rich.table import Table

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.backlog import read_backlog

FAILED = [dg.DagsterRunStatus.FAILURE]


@click.command()
@click.option("--runs", "run_limit", default=3, show_default=True, help="Latest runs shown per job.")
def status(run_limit: int) -> None:
    """Backlog of every stage, the latest runs of each job and how to re-execute failures."""
    settings = runtime.load_settings()
    with get_engine(settings.database_url).connect() as conn:
        backlog = read_backlog(conn)
    console = Console()
    console.print(_backlog_table(backlog))

    instance = runtime.instance()
    runs = Table(title="Latest runs", title_justify="left")
    for column in ("job", "run id", "status", "started", "tags"):
        runs.add_column(column)
    for job_name in _job_names():
        for record in instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=run_limit):
            run = record.dagster_run
            stage = run.tags.get("ordersys/stage", "")
            started = record.start_time and _fmt_time(record.start_time)
            runs.add_row(job_name, run.run_id[:8], run.status.value, started or "-", stage)
    console.print(runs)

    failed = instance.get_run_records(dg.RunsFilter(statuses=FAILED), limit=10)
    if failed:
        table = Table(title="Failed runs", title_justify="left")
        for column in ("job", "run id", "re-execute with"):
            table.add_column(column)
        for record in failed:
            run = record.dagster_run
            table.add_row(run.job_name, run.run_id[:8], f"ordersys runs reexecute {run.run_id}")
        console.print(table)
    else:
        console.print("No failed runs.")


def _backlog_table(backlog) -> Table:
    table = Table(title="Backlog", title_justify="left")
    table.add_column("stage")
    table.add_column("what")
    table.add_column("count", justify="right")
    for status_name, count in backlog.imports_by_status.items():
        table.add_row("import", f"files {status_name}", str(count))
    for status_name, count in backlog.orders_by_status.items():
        table.add_row("workflow", f"orders {status_name}", str(count))
    table.add_row("settlement", "callbacks pending", str(backlog.callbacks_pending))
    table.add_row("settlement", "callbacks rejected", str(backlog.callbacks_rejected))
    for status_name, count in backlog.refunds_by_status.items():
        table.add_row("refunds", f"refunds {status_name}", str(count))
    for status_name, count in backlog.notifications_by_status.items():
        table.add_row("notifications", f"notifications {status_name}", str(count))
    table.add_row("notifications", "notifications due now", str(backlog.notifications_due))
    return table


def _job_names() -> list[str]:
    from ordersys_pipelines.definitions import build_defs

    defs = build_defs()

    return sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))


def _fmt_time(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
