"""Start `refund_processing` when refunds are due."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
import dagster as dg

from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.domain.refunds.processing import backlog
from ordersys_pipelines.jobs.refunds import STAGE_TAGS, process_refund_batch
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.sensors.backlog import parallel_runs, watermark_requests
from ordersys_pipelines.settings import Settings


def build_refund_processing_sensor(settings: Settings, refund_processing: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="refund_processing_sensor",
        target=refund_processing,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches refund_processing when refunds are due (new requests, retries whose "
        "backoff has passed, claims of a stopped run that have lapsed).",
    )
    def refund_processing_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
        with reading(database.engine) as conn:
            work = backlog(conn)
        if not work.due:
            return dg.SkipReason(f"no refunds due ({work.waiting} waiting)")
        # The watermark (newest event among the due refunds) changes whenever the due work does.
        # A large backlog is split into batch runs; each claims its own refunds.
        runs = parallel_runs(work.due, settings.batch_size, settings.parallel_runs)
        return watermark_requests(
            context, job_name=refund_processing.name, key_prefix="refunds", watermark=work.watermark,
            lease_seconds=settings.claim_lease_seconds, runs=runs,
            already=f"{work.due} due refunds already have a run",
            run_config={"ops": {process_refund_batch.name: {"config": {"batch_size": settings.batch_size}}}},
            tags={**STAGE_TAGS, "ordersys/due": str(work.due)},
        )

    return refund_processing_sensor
