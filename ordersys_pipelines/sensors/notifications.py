"""`notification_dispatch_sensor`: starts `notification_dispatch` when notifications are due.

The sensor only looks (one aggregate query). Its watermark is the due work's count, highest id
and latest due time; the run keys follow the backlog sensors' watermark rule
(sensors/backlog.py: watermark_requests), shared with the refunds sensor.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations.
import math

import dagster as dg

from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.domain.notifications.dispatch import due_summary
from ordersys_pipelines.jobs.notifications import dispatch_notifications
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.sensors.backlog import parallel_runs, share, watermark_requests
from ordersys_pipelines.settings import Settings, get_settings

MAX_BATCHES_PER_RUN = 50


def build_notification_dispatch_sensor(
    settings: Settings, notification_dispatch: dg.JobDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name="notification_dispatch_sensor",
        target=notification_dispatch,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts notification_dispatch when pending notifications are due (in batches).",
    )
    def notification_dispatch_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource, notifier: NotifierResource
    ):
        with reading(database.engine) as conn:
            count, max_id, latest = due_summary(conn, config=notifier.config)
        if not count:
            return dg.SkipReason("no notifications due")
        # The due batches are shared among up to ORDERSYS_PARALLEL_RUNS runs (each claims its own
        # notifications); one run takes at most MAX_BATCHES_PER_RUN, the next tick the rest.
        batches = math.ceil(count / notifier.batch_size)
        runs = parallel_runs(batches, 1, get_settings().parallel_runs)
        per_run = min(share(batches, runs), MAX_BATCHES_PER_RUN)
        return watermark_requests(
            context, job_name=notification_dispatch.name, key_prefix="notifications",
            watermark=f"{max_id}-{count}-{latest:%Y%m%dT%H%M%S%f}", lease_seconds=notifier.lease_seconds,
            runs=runs, already=f"{count} notifications due, already requested",
            run_config={"ops": {dispatch_notifications.name: {"config": {
                "batch_size": notifier.batch_size, "max_batches": per_run}}}},
            tags={"ordersys/due": str(count)},
        )

    return notification_dispatch_sensor
