"""The notifications area: the dispatch job and its sensor."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.executors import with_op_executor
from ordersys_pipelines.jobs.notifications import notification_dispatch
from ordersys_pipelines.sensors.notifications import build_notification_dispatch_sensor
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    dispatch = with_op_executor(notification_dispatch, settings)
    return dg.Definitions(jobs=[dispatch], sensors=[build_notification_dispatch_sensor(settings, dispatch)])
