"""`notification_dispatch_sensor`: starts `notification_dispatch` when notifications are due.

The sensor only looks (one aggregate query). The run key is derived from the due work (count,
highest id, latest due time), so a repeated tick over the same work launches nothing twice;
while a dispatch run is queued or running, the sensor waits for it. Work that stays due with
the same fingerprint after a run ended (a run that died before claiming) is requested again
once a claim lease has passed, under a new run key.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations.
import json
import math
import time

import dagster as dg

from ordersys_pipelines.domain.notifications.dispatch import due_summary
from ordersys_pipelines.jobs.notifications import dispatch_notifications, notification_dispatch
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.sensors.backlog import batch_run_requests, parallel_runs, run_in_flight, share
from ordersys_pipelines.settings import get_settings

MAX_BATCHES_PER_RUN = 50


@dg.sensor(
    name="notification_dispatch_sensor",
    # By name: with `target=<job>`, Definitions re-creates the sensor to bind the job's
    # resources and Dagster 1.13.27 then warns that the (unset) beta `owners` parameter is used.
    job_name=notification_dispatch.name,
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts notification_dispatch when pending notifications are due (in batches).",
)
def notification_dispatch_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource, notifier: NotifierResource
):
    with database.engine.connect() as conn:
        count, max_id, latest = due_summary(conn, config=notifier.config)
    if not count:
        return dg.SkipReason("no notifications due")
    in_flight = run_in_flight(context.instance, notification_dispatch.name)
    if in_flight:
        return dg.SkipReason(f"{count} notifications due; dispatch run {in_flight} is in flight")
    fingerprint = f"{max_id}-{count}-{latest:%Y%m%dT%H%M%S%f}"
    previous = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    repeat = 0
    if previous.get("fingerprint") == fingerprint:
        if now - previous["requested_at"] < notifier.lease_seconds:
            return dg.SkipReason(f"{count} notifications due, already requested (run key {previous['run_key']})")
        repeat = previous.get("repeat", 0) + 1
    run_key = f"notifications:{fingerprint}:{repeat}"
    # The due batches are shared among up to ORDERSYS_PARALLEL_RUNS runs (each claims its own
    # notifications); one run takes at most MAX_BATCHES_PER_RUN, the next tick the rest.
    batches = math.ceil(count / notifier.batch_size)
    runs = parallel_runs(batches, 1, get_settings().parallel_runs)
    per_run = min(share(batches, runs), MAX_BATCHES_PER_RUN)
    requests = batch_run_requests(
        run_key, runs,
        run_config={"ops": {dispatch_notifications.name: {"config": {
            "batch_size": notifier.batch_size, "max_batches": per_run}}}},
        tags={"ordersys/due": str(count)},
    )
    cursor = {"fingerprint": fingerprint, "requested_at": now, "repeat": repeat, "run_key": run_key,
              "max_id": max_id}
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))


defs = dg.Definitions(jobs=[notification_dispatch], sensors=[notification_dispatch_sensor])
