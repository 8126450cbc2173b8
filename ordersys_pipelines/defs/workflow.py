"""The order workflow and payment settlement area: jobs and sensors."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.executors import with_op_executor
from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.jobs.workflow import order_workflow, order_workflow_settling
from ordersys_pipelines.sensors.workflow import build_workflow_sensors
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    workflow = with_op_executor(order_workflow_settling if settings.settle_in_workflow else order_workflow, settings)
    settlement = with_op_executor(payment_settlement, settings)
    return dg.Definitions(
        jobs=[workflow, settlement],
        sensors=build_workflow_sensors(settings, workflow, settlement),
    )
