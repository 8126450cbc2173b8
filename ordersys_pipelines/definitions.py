"""The one Definitions object: every area contributes its own `defs`, resources come from settings."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines import workflow_defs
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.settings import get_settings

defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources(get_settings())),
    workflow_defs.defs,
)
