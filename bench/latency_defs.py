"""A prototype code location for bench/latency_bench.py (`--variant levers`), not the project's.

The project's Definitions with the latency levers applied from outside, to measure what they buy
before they move into the package:

- every job runs in-process (one process per run instead of one more per step);
- every sensor, the run-status sensors included, may tick every LATENCY_SENSOR_INTERVAL seconds
  (default 5; the daemon's sensor loop itself runs every 5 s, see dagster/_daemon/sensor.py).
"""

import os

import dagster as dg

from ordersys_pipelines.definitions import defs as project_defs

SENSOR_INTERVAL = int(os.environ.get("LATENCY_SENSOR_INTERVAL", "5"))

for sensor in project_defs.sensors or []:
    # Bench-only: SensorDefinition has no public way to copy with another interval.
    sensor._min_interval = min(sensor.minimum_interval_seconds or SENSOR_INTERVAL, SENSOR_INTERVAL)

defs = dg.Definitions.merge(project_defs, dg.Definitions(executor=dg.in_process_executor))
