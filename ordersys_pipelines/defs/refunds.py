"""The refunds area: processing (sensor-started) and the operator's request job."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.executors import with_op_executor
from ordersys_pipelines.jobs.refunds import refund_processing, refund_request
from ordersys_pipelines.sensors.refunds import build_refund_processing_sensor
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    processing = with_op_executor(refund_processing, settings)
    return dg.Definitions(
        jobs=[processing, with_op_executor(refund_request, settings)],
        sensors=[build_refund_processing_sensor(settings, processing)],
    )
