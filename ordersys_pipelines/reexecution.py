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

from collections.abc import Mapping

import dagster as dg

# The tags Dagster leaves out when a re-execution inherits its parent's (a retry's number, the
# failure's reason, a finished backfill's id; the UI's "Re-execute" does the same).
from dagster._core.storage.tags import TAGS_TO_MAYBE_OMIT_ON_RETRY

EPHEMERAL_JOB = "__ephemeral_asset_job__"
IMPLICIT_ASSET_JOB = "__ASSET_JOB"
LINEAGE_TAGS = ("dagster/parent_run_id", "dagster/root_run_id")


class CannotReexecute(ValueError):
    """The run cannot be re-executed; the message says why and what to do instead."""


def carried_tags(parent: dg.DagsterRun) -> dict[str, str]:
    """The parent's tags the re-execution keeps: all but the retry bookkeeping and its lineage
    (Dagster sets the new run's parent and root itself)."""
    return {key: value for key, value in parent.tags.items()
            if key not in TAGS_TO_MAYBE_OMIT_ON_RETRY and key not in LINEAGE_TAGS}


def job_name_for(parent: dg.DagsterRun, defs: dg.Definitions) -> str:
    """The job of the code location that re-executes `parent`: its own, or for an ephemeral
    asset run the first named asset job holding its assets (else the implicit asset job)."""
    repository = defs.get_repository_def()
    if parent.job_name != EPHEMERAL_JOB:
        if not repository.has_job(parent.job_name):
            raise CannotReexecute(f"run {parent.run_id} is of job {parent.job_name}, which this code location "
                                  "does not have (renamed or removed); launch the work anew")
        return parent.job_name
    wanted = set(parent.asset_selection or ())
    for job in sorted(repository.get_all_jobs(), key=lambda j: j.name.startswith("__")):
        if job.name != EPHEMERAL_JOB and wanted and wanted <= set(job.asset_layer.executable_asset_keys):
            return job.name
    raise CannotReexecute(f"run {parent.run_id} materialized assets no job of this code location holds: "
                          f"{', '.join(sorted(k.to_user_string() for k in wanted)) or 'none recorded'}")


def reexecution_options(parent: dg.DagsterRun, instance: dg.DagsterInstance, *, all_steps: bool) -> dg.ReexecutionOptions:
    if all_steps:
        return dg.ReexecutionOptions(parent_run_id=parent.run_id)
    if parent.status != dg.DagsterRunStatus.FAILURE:
        raise CannotReexecute(f"run {parent.run_id} did not fail ({parent.status.value}): nothing to resume; "
                              "use --all-steps to run all of it again")
    return dg.ReexecutionOptions.from_failure(parent.run_id, instance)


def reexecute(
    parent: dg.DagsterRun,
    job: dg.JobDefinition | dg.ReconstructableJob,
    instance: dg.DagsterInstance,
    *,
    all_steps: bool = False,
    extra_tags: Mapping[str, str] | None = None,
) -> dg.JobExecutionResult:
    """Run the re-execution of `parent` in this process (its steps on the job's executor) and
    return the result; the caller closes it (`with`)."""
    options = reexecution_options(parent, instance, all_steps=all_steps)
    return dg.execute_job(
        job,
        instance=instance,
        run_config=parent.run_config,
        tags={**carried_tags(parent), **(extra_tags or {})},
        reexecution_options=options,
        raise_on_error=False,
    )
