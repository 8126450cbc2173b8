"""The operations area: alerts to the operator about failed runs."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.sensors.operations import operator_alert_on_failure, operator_alert_on_missed_retry
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions(sensors=[operator_alert_on_failure, operator_alert_on_missed_retry])
