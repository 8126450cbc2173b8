"""The analytics area: daily_kpis, customer_leaderboard, their refresh job, sensor and schedule,
and the payments reconciliation check on the leaderboard."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets import reconciliation
from ordersys_pipelines.assets.analytics import build_analytics
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(build_analytics(settings).definitions(), reconciliation.defs)
