"""Start `refund_processing` when refunds are due; and the refunds area's Definitions."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
import json
import time

import dagster as dg

from ordersys_pipelines.domain.refunds.processing import backlog
from ordersys_pipelines.jobs.refunds import (
    STAGE_TAGS,
    process_refund_batch,
    refund_processing,
    refund_request,
)
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.sensors.backlog import batch_run_requests, parallel_runs
from ordersys_pipelines.settings import get_settings


@dg.sensor(
    name="refund_processing_sensor",
    # By name: with `target=<job>`, Definitions re-creates the sensor to bind the job's
    # resources and Dagster 1.13.27 then warns that the (unset) beta `owners` parameter is used.
    job_name=refund_processing.name,
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches refund_processing when refunds are due (new requests, retries whose "
    "backoff has passed, claims of a stopped run that have lapsed).",
)
def refund_processing_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
    with database.engine.connect() as conn:
        work = backlog(conn)
    if not work.due:
        return dg.SkipReason(f"no refunds due ({work.waiting} waiting)")
    # The watermark (newest event among the due refunds) changes whenever the due work does.
    # Unchanged work is launched again only after a lease, in case the run launched for it died
    # before claiming anything; the run key makes a repeated tick launch nothing twice.
    settings = get_settings()
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


defs = dg.Definitions(jobs=[refund_processing, refund_request], sensors=[refund_processing_sensor])
