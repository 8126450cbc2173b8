"""Re-execute a run of any job the project has, as the UI's "Re-execute" does it.

The new run is Dagster's re-execution of its parent (`dagster/parent_run_id`, `dagster/root_run_id`,
so the UI shows it in the parent's run group): the same job, the parent's run config (an import's
file, a refund request's order and reference), the parent's tags (the partition, the day range
`dagster/asset_partition_range_start`/`_end`, the file and the stage), the parent's asset
selection, and by default only the steps that failed or did not run.

A run launched by `dg.materialize` (CLI imports before they ran as `orders_import`) is recorded
as `__ephemeral_asset_job__`, a job no code location has: it is re-executed as the project's
asset job that holds the same assets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

# No public API gives a job of a code location by name for `execute_job` (build_reconstructable_job
# wants a function returning one job, which cannot be the implicit `__ASSET_JOB`).
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository

# The tags Dagster leaves out when a re-execution inherits its parent's (a retry's number, the
# failure's reason, a finished backfill's id; the UI's "Re-execute" does the same).
from dagster._core.storage.tags import TAGS_TO_MAYBE_OMIT_ON_RETRY

EPHEMERAL_JOB = "__ephemeral_asset_job__"
CODE_MODULE, CODE_ATTRIBUTE = "ordersys_pipelines.definitions", "defs"  # as in workspace.yaml
PARENT_TAG, ROOT_TAG = "dagster/parent_run_id", "dagster/root_run_id"


class CannotReexecute(ValueError):
    """The run cannot be re-executed; the message says why and what to do instead."""


def carried_tags(parent: dg.DagsterRun) -> dict[str, str]:
    """The new run's tags: the parent's but the retry bookkeeping, and its lineage. `execute_job`
    records parent and root on the run but not as tags, which the UI's run group, the run
    filters and `ordersys status` (a failure healed by its re-execution) read."""
    kept = {key: value for key, value in parent.tags.items() if key not in TAGS_TO_MAYBE_OMIT_ON_RETRY}
    return {**kept, PARENT_TAG: parent.run_id, ROOT_TAG: parent.root_run_id or parent.run_id}


def _parent_steps(parent: dg.DagsterRun, instance: dg.DagsterInstance) -> set[str]:
    snapshot = instance.get_execution_plan_snapshot(parent.execution_plan_snapshot_id)
    return {step.key for step in snapshot.steps} if snapshot else set()


def job_name_for(parent: dg.DagsterRun, defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    """The job of the code location that re-executes `parent`: its own, or for an ephemeral
    asset run the first named asset job that has all of its steps (else the implicit asset job)."""
    repository = defs.get_repository_def()
    if parent.job_name != EPHEMERAL_JOB:
        if not repository.has_job(parent.job_name):
            raise CannotReexecute(f"run {parent.run_id} is of job {parent.job_name}, which this code location "
                                  "does not have (renamed or removed); launch the work anew")
        return parent.job_name
    # dg.materialize records neither an asset selection nor a job the code location has: its
    # steps (one per asset op) name the assets.
    steps = _parent_steps(parent, instance)
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name.startswith("__")):
        if steps and job.asset_layer.executable_asset_keys and steps <= set(job.graph.node_names()):
            return job.name
    raise CannotReexecute(f"run {parent.run_id} ran steps no job of this code location has: "
                          f"{', '.join(sorted(steps)) or 'none recorded'}")


def reconstructable_job(job_name: str) -> ReconstructableJob:
    """The job as `dagster dev` loads it (workspace.yaml's module and attribute), so the steps'
    processes and the UI find the same code."""
    repository = ReconstructableRepository.for_module(CODE_MODULE, CODE_ATTRIBUTE, working_directory=os.getcwd())
    return repository.get_reconstructable_job(job_name)


def reexecution_options(parent: dg.DagsterRun, instance: dg.DagsterInstance, *, all_steps: bool) -> dg.ReexecutionOptions:
    if all_steps:
        return dg.ReexecutionOptions(parent_run_id=parent.run_id)
    # What Dagster resumes from its failed steps: a failed or a canceled run.
    if parent.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        raise CannotReexecute(f"run {parent.run_id} did not fail ({parent.status.value}): nothing to resume; "
                              "use --all-steps to run all of it again")
    return dg.ReexecutionOptions.from_failure(parent.run_id, instance)


def reexecute(
    parent: dg.DagsterRun,
    job: ReconstructableJob,
    instance: dg.DagsterInstance,
    *,
    all_steps: bool = False,
    extra_tags: Mapping[str, str] | None = None,
) -> dg.JobExecutionResult:
    """Run the re-execution of `parent` in this process (its steps on the job's executor) and
    return the result; the caller closes it (`with`)."""
    options = reexecution_options(parent, instance, all_steps=all_steps)
    if parent.asset_selection:
        # Dagster plans a re-execution on the whole job before it takes the parent's selection,
        # so the implicit asset job would ask for the config of assets the run never had.
        job = job.get_subset(asset_selection=parent.asset_selection)
    return dg.execute_job(
        job,
        instance=instance,
        run_config=parent.run_config,
        tags={**carried_tags(parent), **(extra_tags or {})},
        reexecution_options=options,
        raise_on_error=False,
    )
