"""Sensors that start the workflow and settlement jobs when there is work, and the workflow right
after an import succeeds.

A tick only looks (a couple of capped aggregate queries, domain/watermarks.py). The run keys
follow the backlog sensors' one rule (sensors/backlog.py: watermark_requests): nothing while a
run of the job is in flight, the same waiting work is not requested twice within a claim lease,
and a large backlog becomes one run per batch (at most ORDERSYS_PARALLEL_RUNS, sharing a backlog
short of that many batches evenly); concurrent runs are safe because each claims its own orders.
"""

# No `from __future__ import annotations`: Dagster reads the sensor signatures at definition time.
import dagster as dg

from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.domain import watermarks
from ordersys_pipelines.jobs.workflow import initiate_payments, reserve_stock
from ordersys_pipelines.resources import DatabaseResource, WorkflowSettingsResource
from ordersys_pipelines.sensors.backlog import (
    batch_run_config,
    even_batch,
    parallel_runs,
    run_in_flight,
    watermark_requests,
)
from ordersys_pipelines.settings import Settings

IMPORT_ASSET = dg.AssetKey("orders_csv")


def run_tags(stage: str, batch_size: int) -> dict[str, str]:
    return {"ordersys/stage": stage, "ordersys/batch_size": str(batch_size)}


# The ops whose work the workflow's waiting count covers. A settling workflow's apply_callbacks
# keeps the configured batch: the callbacks are not in that count, and a share of it would
# leave due callbacks for a payment_settlement run.
WORKFLOW_COUNTED_OPS = frozenset({reserve_stock.name, initiate_payments.name})


def _requests(context: dg.SensorEvaluationContext, job: dg.JobDefinition, stage: str, waiting: watermarks.Waiting,
              workflow: WorkflowSettingsResource, counted_ops: frozenset[str] | None = None,
              ) -> dg.SensorResult | dg.SkipReason:
    """The batch runs for `waiting`; a share of a short backlog goes to `counted_ops` (all ops
    when None)."""
    if not waiting.count:
        return dg.SkipReason("no pending work")
    runs = parallel_runs(waiting.count, workflow.batch_size, workflow.max_runs_per_tick)
    size = even_batch(waiting.count, runs, workflow.batch_size, capped=waiting.capped)
    # The configured batch needs no run config (a run launched by hand takes it too).
    run_config = batch_run_config(job, size, counted_ops) if size < workflow.batch_size else None
    return watermark_requests(
        context, job_name=job.name, key_prefix=job.name, watermark=waiting.watermark,
        lease_seconds=workflow.claim_lease_seconds, runs=runs,
        already=f"{waiting.count} waiting, already requested", tags=run_tags(stage, size), run_config=run_config,
    )


def is_import_run(run: dg.DagsterRun) -> bool:
    """An orders import: tagged with the import stage, or materializing `orders_csv`."""
    return run.tags.get("ordersys/stage") == "import" or IMPORT_ASSET in (run.asset_selection or ())


def build_workflow_sensors(
    settings: Settings,
    order_workflow: dg.JobDefinition,
    payment_settlement: dg.JobDefinition,
) -> list[dg.SensorDefinition]:
    """The area's sensors for the jobs as the Definitions hold them (with their executor)."""

    @dg.sensor(
        name="order_workflow_sensor",
        target=order_workflow,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts order_workflow runs while created orders (of completed imports) await reservation.",
    )
    def order_workflow_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource, workflow: WorkflowSettingsResource
    ):
        with reading(database.engine) as conn:
            waiting = watermarks.workflow_waiting(conn)
        return _requests(context, order_workflow, "workflow", waiting, workflow, WORKFLOW_COUNTED_OPS)

    @dg.sensor(
        name="payment_settlement_sensor",
        target=payment_settlement,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts payment_settlement runs while payment callbacks are due or payments are overdue.",
    )
    def payment_settlement_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource, workflow: WorkflowSettingsResource
    ):
        if settings.settle_in_workflow:
            # An order_workflow run in flight applies the callbacks its payments bring; one older
            # than a claim lease may be hung, and settlement does not wait for it.
            in_flight = run_in_flight(context.instance, order_workflow.name, workflow.claim_lease_seconds)
            if in_flight:
                return dg.SkipReason(f"{order_workflow.name} run {in_flight} is in flight and settles what is due")
        with reading(database.engine) as conn:
            waiting = watermarks.settlement_waiting(conn, workflow.payment_timeout_seconds)
        return _requests(context, payment_settlement, "settlement", waiting, workflow)

    @dg.run_status_sensor(
        name="workflow_after_import_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        # The whole location, not `monitored_jobs`: an import materialized from the asset graph
        # runs as Dagster's implicit asset job; is_import_run recognises it by its selection.
        monitor_all_code_locations=False,
        request_job=order_workflow,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts order_workflow as soon as an orders import run succeeds.",
    )
    def workflow_after_import_sensor(context: dg.RunStatusSensorContext, workflow: WorkflowSettingsResource):
        run = context.dagster_run
        if not is_import_run(run):
            return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is not an orders import")
        in_flight = run_in_flight(context.instance, order_workflow.name)
        if in_flight:  # the backlog sensor was quicker; its run, or the next, takes the orders
            return dg.SkipReason(f"{order_workflow.name} run {in_flight} is in flight")
        return dg.RunRequest(run_key=f"after-import:{run.run_id}", tags=run_tags("workflow", workflow.batch_size))

    return [order_workflow_sensor, payment_settlement_sensor, workflow_after_import_sensor]
