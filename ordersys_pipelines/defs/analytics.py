"""The analytics area: daily_kpis, customer_leaderboard, their refresh job, sensor and schedule."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets.analytics import build_analytics
from ordersys_pipelines.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return build_analytics(settings).definitions()
