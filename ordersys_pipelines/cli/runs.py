"""`ordersys runs reexecute RUN_ID`: re-execute a failed run from its failed steps."""

from __future__ import annotations

import click
import dagster as dg

from ordersys_pipelines.cli import runtime


@click.group()
def runs() -> None:
    """Dagster runs."""


@runs.command()
@click.argument("run_id")
@click.option("--all-steps", is_flag=True, help="Run every step again, not only the failed ones.")
def reexecute(run_id: str, all_steps: bool) -> None:
    """Re-execute RUN_ID in this process, recorded in the same instance."""
    runtime.load_settings(need_redis=True)
    instance = runtime.instance()
    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise click.ClickException(f"no run {run_id} in this instance ({instance.root_directory})")
    options = (
        dg.ReexecutionOptions(parent_run_id=run_id)
        if all_steps
        else dg.ReexecutionOptions.from_failure(run_id, instance)
    )
    job = dg.build_reconstructable_job("ordersys_pipelines.definitions", "job_by_name", (parent.job_name,))
    with dg.execute_job(job, instance=instance, reexecution_options=options) as result:
        state = "succeeded" if result.success else "failed"
        click.echo(f"re-execution {result.run_id} of {parent.job_name} {state}")
        if not result.success:
            raise SystemExit(1)
