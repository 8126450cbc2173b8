"""`ordersys runs reexecute RUN_ID`: re-execute a run of any job from its failed steps."""

from __future__ import annotations

import click

from ordersys_pipelines.cli import runtime


@click.group()
def runs() -> None:
    """Dagster runs."""


@runs.command()
@click.argument("run_id")
@click.option("--all-steps", is_flag=True, help="Run every step again, not only the failed ones.")
def reexecute(run_id: str, all_steps: bool) -> None:
    """Re-execute RUN_ID in this process, recorded in the same instance as its re-execution
    (same job, partition or day range, run config and tags; the UI shows it in RUN_ID's group)."""
    import dagster as dg

    from ordersys_pipelines.definitions import build_defs
    from ordersys_pipelines.reexecution import CannotReexecute, job_name_for, reconstructable_job, reexecute

    settings = runtime.load_settings(need_redis=True)
    instance = runtime.instance()
    parent = instance.get_run_by_id(run_id)
    if parent is None:
        raise click.ClickException(f"no run {run_id} in this instance ({instance.root_directory})")
    try:
        job_name = job_name_for(parent, build_defs(settings), instance)
        with reexecute(parent, reconstructable_job(job_name), instance, all_steps=all_steps) as result:
            state = "succeeded" if result.success else "failed"
            click.echo(f"re-execution {result.run_id} of {job_name} ({parent.run_id}) {state}")
            if not result.success:
                raise SystemExit(1)
    except CannotReexecute as exc:
        raise click.ClickException(str(exc)) from None
    except dg.DagsterInvalidSubsetError as exc:  # from failure: every step of the parent succeeded
        raise click.ClickException(f"{exc}; use --all-steps to run all of it again") from None
