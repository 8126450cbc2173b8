"""The first daily KPI partition: a year back by default (not every day since 2020), still set
by ORDERSYS_KPI_START_DATE."""

from __future__ import annotations

from datetime import date

import pytest

from ordersys_pipelines.settings import Settings, default_kpi_start_date


@pytest.mark.parametrize(
    ("today", "start"),
    [(date(2026, 12, 2), "2025-12-01"), (date(2026, 1, 31), "2025-01-01"), (date(2028, 2, 29), "2027-02-01")],
)
def test_the_default_start_is_the_first_of_the_month_a_year_back(today, start):
    assert default_kpi_start_date(today) == start


def test_a_fresh_install_has_about_a_year_of_partitions(monkeypatch):
    from ordersys_pipelines.assets.analytics import build_analytics

    monkeypatch.delenv("ORDERSYS_KPI_START_DATE", raising=False)
    keys = build_analytics(Settings.from_env()).partitions_def.get_partition_keys()
    assert 366 <= len(keys) <= 398  # a year, the days of this month, and today's open partition


def test_the_setting_still_wins(monkeypatch):
    monkeypatch.setenv("ORDERSYS_KPI_START_DATE", "2020-01-01")
    assert Settings.from_env().kpi_start_date == "2020-01-01"
