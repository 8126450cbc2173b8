"""The KPIs, the leaderboard and the freshness lookup never crash on a poison row written
straight into the database: unreadable dates, sums past 64 bits, dates that are text."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from analytics_data import MARCH_BERLIN, crafted_march
from poison_support import poison_timestamp, write_raw

from ordersys_pipelines.assets.analytics import build_analytics, materialize_days
from ordersys_pipelines.domain.analytics.freshness import touched_days
from ordersys_pipelines.domain.analytics.isolated import compute_range_isolating
from ordersys_pipelines.domain.analytics.kpis import activity_span, orders_before_start
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore
from ordersys_pipelines.resources import build_resources

BERLIN = ZoneInfo("Europe/Berlin")
MARCH = (date(2024, 3, 9), date(2024, 3, 12))


@pytest.fixture
def berlin(settings):
    return dataclasses.replace(settings, timezone="Europe/Berlin", kpi_start_date="2024-03-01")


@pytest.fixture
def resources(berlin, redis_resource):
    return {**build_resources(berlin), "redis": redis_resource}


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_unreadable_order_dates_before_and_after_every_day_crash_nothing(engine, berlin, resources,
                                                                         redis_resource):
    shop = crafted_march(engine)
    customer = shop.customer("Poison")
    before = shop.order(customer, datetime(2024, 3, 10, 9), 1_000)
    after = shop.order(customer, datetime(2024, 3, 10, 9), 2_000)
    cancelled = shop.order(customer, datetime(2024, 3, 11, 9), 3_000, "cancelled")
    for order_id in (before, after, cancelled):
        shop.order_event(order_id, "run-1")
    with engine.begin() as conn:
        early = poison_timestamp(conn, "orders", "order_date", before, past=True)
        poison_timestamp(conn, "orders", "order_date", after)
    with engine.connect() as conn:
        assert orders_before_start(conn, datetime(2024, 3, 1)).earliest.startswith(early.split()[0][:4])
        span = activity_span(conn)
        assert span == (datetime(2024, 3, 9, 22, 59, 59), datetime(2024, 3, 12, 10))
        touched = touched_days(conn, "run-1", BERLIN)  # the days of what can be read
        assert (touched.first, touched.last, touched.orders) == (date(2024, 3, 11), date(2024, 3, 11), 3)

    result = materialize_days(build_analytics(berlin), resources, *MARCH, instance=None)
    assert result.success
    checks = _checks(result)
    assert checks["redis_matches_database"].passed
    assert checks["no_orders_before_start"].metadata["orders_before_start"].value >= 1
    store = AnalyticsStore(redis_resource.client(), redis_resource.key)
    march_10 = MARCH_BERLIN[date(2024, 3, 10)].as_hash()
    assert store.read_day(date(2024, 3, 10)) == {name: str(value) for name, value in march_10.items()}


# SQLite only: its SUM stops at 64 bits, and only there can a date be arbitrary text.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_sum_past_64_bits_is_counted_exactly_and_a_row_without_a_day_is_left_out(engine, berlin, resources):
    shop = crafted_march(engine)
    customer = shop.customer("Big spender")
    shop.order(customer, datetime(2024, 3, 10, 16), 2**62)
    shop.order(customer, datetime(2024, 3, 10, 17), 2**62)
    garbled = shop.order(customer, datetime(2024, 3, 10, 18), 5)
    with engine.begin() as conn:
        write_raw(conn, "UPDATE orders SET order_date = '2024-03-10 99:99:99' WHERE id = :row_id", row_id=garbled)
    with engine.connect() as conn:
        counted = compute_range_isolating(conn, *MARCH, BERLIN)
    expected = MARCH_BERLIN[date(2024, 3, 10)]
    assert counted.kpis[date(2024, 3, 10)] == dataclasses.replace(
        expected, order_count=expected.order_count + 2, gross_revenue_cents=expected.gross_revenue_cents + 2**63)
    assert counted.kpis[date(2024, 3, 12)] == MARCH_BERLIN[date(2024, 3, 12)]
    assert [(r.table, r.row_id) for r in counted.left_out] == [("orders", garbled)]
    assert counted.left_out[0].reason == "a stored timestamp is not a valid date: it falls on no day"

    result = materialize_days(build_analytics(berlin), resources, *MARCH, instance=None)
    assert result.success and all(check.passed for check in _checks(result).values())
    materialization = result.asset_materializations_for_node("daily_kpis")[0]
    assert materialization.metadata["rows_left_out"].value == 1
    assert str(garbled) in materialization.metadata["rows_left_out_sample"].value
    # The big spender's net revenue does not fit a score: left out of the leaderboard, named.
    [board] = result.asset_materializations_for_node("rebuild_customer_leaderboard")
    assert board.metadata["customers_left_out"].value == 1
    assert str(customer) in board.metadata["customers_left_out_sample"].value
