"""The one Definitions object: every area contributes its own `defs`, resources come from settings."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines import imports_defs, workflow_defs
from ordersys_pipelines.assets import analytics, reconciliation
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.sensors import notifications as notifications_area
from ordersys_pipelines.sensors import operations as operations_area
from ordersys_pipelines.sensors import refunds as refunds_area
from ordersys_pipelines.settings import get_settings

defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources(get_settings())),
    imports_defs.defs,
    workflow_defs.defs,
    refunds_area.defs,
    notifications_area.defs,
    analytics.defs,
    reconciliation.defs,
    operations_area.defs,
)


def job_by_name(name: str) -> dg.JobDefinition:
    """For re-executing a run in a fresh process (`ordersys runs reexecute`)."""
    return defs.resolve_job_def(name)
