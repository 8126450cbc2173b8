"""The order workflow and payment settlement area: jobs and sensors."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.jobs.workflow import order_workflow
from ordersys_pipelines.sensors.workflow import (
    order_workflow_sensor,
    payment_settlement_sensor,
    workflow_after_import_sensor,
)

defs = dg.Definitions(
    jobs=[order_workflow, payment_settlement],
    sensors=[order_workflow_sensor, payment_settlement_sensor, workflow_after_import_sensor],
)
