"""Comparisons behind the analytics asset checks: what Redis holds against what the
database says. They return the differences, so a failed check can show them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from ordersys_pipelines.domain.analytics.kpis import DayKpis
from ordersys_pipelines.domain.analytics.leaderboard import NetRevenueTotals

MISSING = "(missing)"


@dataclass(frozen=True)
class Difference:
    subject: str  # a day, or the leaderboard
    field: str
    database: str
    redis: str


def day_differences(
    expected: Mapping[date, DayKpis], stored: Mapping[date, Mapping[str, str] | None]
) -> list[Difference]:
    """Every field where a day's hash differs from the database aggregate, including a missing
    hash, a missing field and a field the KPIs do not have."""
    differences = []
    for day, kpis in sorted(expected.items()):
        want = {name: str(value) for name, value in kpis.as_hash().items()}
        have = stored.get(day)
        if have is None:
            differences.append(Difference(day.isoformat(), "(hash)", "present", MISSING))
            continue
        for name in sorted(want.keys() | have.keys()):
            if want.get(name) != have.get(name):
                differences.append(
                    Difference(day.isoformat(), name, want.get(name, MISSING), have.get(name, MISSING))
                )
    return differences


def leaderboard_differences(expected: NetRevenueTotals, members: int, total_cents: int) -> list[Difference]:
    differences = []
    if members != expected.customers:
        differences.append(Difference("leaderboard", "length", str(expected.customers), str(members)))
    if total_cents != expected.net_revenue_cents:
        differences.append(
            Difference("leaderboard", "sum", str(expected.net_revenue_cents), str(total_cents))
        )
    return differences
