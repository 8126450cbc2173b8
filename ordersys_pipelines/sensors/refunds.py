"""Start `refund_processing` when refunds are due."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
import json
import time

import dagster as dg

from ordersys_pipelines.domain.refunds.processing import backlog
from ordersys_pipelines.jobs.refunds import STAGE_TAGS, process_refund_batch
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.sensors.backlog import batch_run_requests, parallel_runs, run_in_flight
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
        with database.engine.connect() as conn:
            work = backlog(conn)
        if not work.due:
            return dg.SkipReason(f"no refunds due ({work.waiting} waiting)")
        in_flight = run_in_flight(context.instance, refund_processing.name)
        if in_flight:
            return dg.SkipReason(f"{work.due} refunds due; refund run {in_flight} is in flight")
        # The watermark (newest event among the due refunds) changes whenever the due work does.
        # Unchanged work is launched again only after a lease, in case the run launched for it died
        # before claiming anything; the run key makes a repeated tick launch nothing twice.
        lease = settings.claim_lease_seconds
        now = time.time()
        cursor = json.loads(context.cursor) if context.cursor else {}
        if cursor.get("watermark") == work.watermark and now - cursor.get("launched_at", 0) < lease:
            return dg.SkipReason(f"{work.due} due refunds already have a run (watermark {work.watermark})")
        run_key = f"refunds:{work.watermark}:{int(now // lease)}"
        # A large backlog is split into batch runs; each claims its own refunds.
        runs = parallel_runs(work.due, settings.batch_size, settings.parallel_runs)
        requests = batch_run_requests(
            run_key, runs,
            run_config={"ops": {process_refund_batch.name: {"config": {"batch_size": settings.batch_size}}}},
            tags={**STAGE_TAGS, "ordersys/due": str(work.due)},
        )
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps({"watermark": work.watermark, "launched_at": now})
        )

    return refund_processing_sensor
