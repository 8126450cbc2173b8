"""`ordersys process` refreshes the KPI days and the leaderboard its runs touched, so
`ordersys process && ordersys kpi` shows the new figures (Redis under the test's prefix)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from workflow_helpers import BASE_DATE, add_order, add_products

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore


@pytest.fixture
def cli(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, value in (("ORDERSYS_KPI_START_DATE", "2024-01-01"), ("ORDERSYS_GATEWAY_APPROVAL_RATE", "1"),
                        ("ORDERSYS_GATEWAY_DUPLICATE_RATE", "0")):
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def _values(kpi_output: str) -> dict[str, str]:
    """`ordersys kpi`'s table as {label: value}."""
    rows = [line.rsplit("  ", 1) for line in kpi_output.splitlines()[3:] if line.strip()]
    return {label.strip(): value.strip() for label, value in rows}


def _orders(settings) -> None:
    with get_engine(settings.database_url).begin() as conn:
        add_products(conn, {"A": 100})
        for i in range(3):  # 2024-03-01 and 2024-03-03: two days, one in between without orders
            add_order(conn, f"O-{i}", [("A", 2)], date=BASE_DATE + timedelta(days=2 * (i // 2)),
                      email=f"c{i}@example.com")


def test_process_then_kpi_shows_the_new_figures(cli, settings, redis_resource):
    _orders(settings)
    assert "no KPIs for 2024-03-01" in cli("kpi", "--date", "2024-03-01").output
    result = cli("process")
    assert result.exit_code == 0, result.output
    # The orders' days, and today (the notifications sent): two spans, not the years between.
    assert "analytics: KPI days 2024-03-01 .. 2024-03-03, " in result.output
    assert "and the leaderboard" in result.output

    first = _values(cli("kpi", "--date", "2024-03-01").output)
    assert (first["Orders"], first["Gross revenue"]) == ("2", "10.00 EUR")
    assert _values(cli("kpi", "--date", "2024-03-03").output)["Orders"] == "1"
    store = AnalyticsStore(redis_resource.client(), redis_resource.key)
    assert store.read_day(datetime(2024, 3, 2).date())["order_count"] == "0"  # the day between, written too
    assert store.read_day(datetime(2024, 3, 4).date()) is None  # untouched days stay as they were
    assert [c.net_revenue_cents for c in store.leaderboard_top(5)] == [500, 500, 500]
    assert "done: 0 run(s)" in cli("process").output  # nothing ran: nothing refreshed


def test_no_analytics_leaves_redis_alone(cli, settings, redis_resource):
    _orders(settings)
    result = cli("process", "--no-analytics")
    assert result.exit_code == 0, result.output
    assert "analytics:" not in result.output
    store = AnalyticsStore(redis_resource.client(), redis_resource.key)
    assert store.read_day(BASE_DATE.date()) is None and store.leaderboard_top(1) == []


def test_days_before_the_kpi_start_are_left_out(cli, settings, redis_resource, monkeypatch):
    monkeypatch.setenv("ORDERSYS_KPI_START_DATE", "2024-03-02")
    _orders(settings)
    result = cli("process")
    assert "analytics: KPI days 2024-03-02 .. 2024-03-03" in result.output
    store = AnalyticsStore(redis_resource.client(), redis_resource.key)
    assert store.read_day(BASE_DATE.date()) is None
    assert store.read_day(datetime(2024, 3, 3).date())["order_count"] == "1"
