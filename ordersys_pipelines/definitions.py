"""The code location: one Definitions, built when Dagster loads it.

Settings are read then (not when a module is imported), resources are built from them with
every credential as a `dg.EnvVar`, and each area (ordersys_pipelines/defs/) adds its assets,
jobs, sensors and schedules. `build_defs()` is the same for the CLI and the tests.
"""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.dagster_warnings import accepted_dagster_warnings
from ordersys_pipelines.defs import AREAS
from ordersys_pipelines.executors import default_executor
from ordersys_pipelines.resources import build_resources
from ordersys_pipelines.settings import Settings, get_settings


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or get_settings()
    with accepted_dagster_warnings():
        merged = dg.Definitions.merge(
            # The asset jobs' executor; the op jobs name theirs (executors.py).
            dg.Definitions(resources=build_resources(settings), executor=default_executor(settings)),
            *(area.build_defs(settings) for area in AREAS),
        )
        # Resolving binds resources to jobs and sensors: the warnings it may give are those above.
        merged.get_repository_def()
    return merged


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
