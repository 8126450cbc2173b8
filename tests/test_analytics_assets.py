"""The analytics assets, their checks, the freshness sensor and the hourly schedule, run
in-process against the real database (both backends) and the real Redis."""

from __future__ import annotations

import dataclasses
import warnings
from datetime import date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from analytics_data import MARCH_BERLIN, Shop, crafted_march
from sqlalchemy import select

from ordersys_pipelines.assets.analytics import (
    DAILY_KPIS,
    JOB_NAME,
    LEADERBOARD,
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_analytics,
    leaderboard_checks,
    materialize_days,
    redis_matches_database,
)
from ordersys_pipelines.db.schema import orders, refunds
from ordersys_pipelines.domain.analytics.kpis import DayKpis, compute_range
from ordersys_pipelines.domain.analytics.leaderboard import net_revenue_totals
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore
from ordersys_pipelines.resources import build_resources

BERLIN = ZoneInfo("Europe/Berlin")


def d(text: str) -> date:
    return date.fromisoformat(text)


@pytest.fixture
def berlin(settings):
    return dataclasses.replace(settings, timezone="Europe/Berlin", kpi_start_date="2024-03-01")


@pytest.fixture
def analytics(berlin):
    return build_analytics(berlin)


@pytest.fixture
def resources(berlin, redis_resource):
    return {**build_resources(berlin), "redis": redis_resource}


@pytest.fixture
def store(redis_resource) -> AnalyticsStore:
    return AnalyticsStore(redis_resource.client(), redis_resource.key)


@pytest.fixture
def march(engine) -> Shop:
    return crafted_march(engine)


def redis_snapshot(redis_resource) -> dict:
    """Every key under the test prefix with its full contents."""
    client = redis_resource.client()
    snapshot = {}
    for key in client.scan_iter(match=f"{redis_resource.key_prefix}*", count=1000):
        kind = client.type(key)
        if kind == "hash":
            snapshot[key] = client.hgetall(key)
        elif kind == "zset":
            snapshot[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            snapshot[key] = (kind, client.dump(key))
    return snapshot


def wipe(redis_resource) -> None:
    client = redis_resource.client()
    for key in client.scan_iter(match=f"{redis_resource.key_prefix}*", count=1000):
        client.delete(key)


def materializations_of(result, key: dg.AssetKey) -> list[dg.AssetMaterialization]:
    events = result.get_asset_materialization_events()
    return [e.event_specific_data.materialization for e in events if e.asset_key == key]


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_definitions_load_without_the_beta_warning(berlin, resources):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analytics = build_analytics(berlin)
        analytics.definitions(resources).resolve_job_def(JOB_NAME)
    assert [str(w.message) for w in caught] == []


def test_one_day_partition(analytics, resources, store, march):
    result = dg.materialize(
        [analytics.daily_kpis], partition_key="2024-03-10", resources=resources, selection=[DAILY_KPIS]
    )
    assert result.success
    expected = MARCH_BERLIN[d("2024-03-10")].as_hash()
    assert store.read_day(d("2024-03-10")) == {k: str(v) for k, v in expected.items()}
    assert store.read_day(d("2024-03-09")) is None  # only the asked day is written
    (materialization,) = result.asset_materializations_for_node("daily_kpis")
    assert materialization.partition == "2024-03-10"
    assert materialization.metadata["order_count"].value == 3
    assert materialization.metadata["average_order_value_cents"].value == 4_200
    assert materialization.metadata["net_revenue"].value == "126.01 EUR"
    checks = checks_of(result)
    assert checks["redis_matches_database"].passed and checks["no_orders_before_start"].passed


def test_a_range_is_one_run_and_rematerializing_changes_nothing(analytics, resources, store, redis_resource, march):
    instance = dg.DagsterInstance.ephemeral()
    first = materialize_days(analytics, resources, d("2024-03-01"), d("2024-03-31"), instance=instance)
    assert first.success
    assert len(instance.get_runs()) == 1
    run = instance.get_runs()[0]
    assert run.tags[RANGE_START_TAG] == "2024-03-01" and run.tags[RANGE_END_TAG] == "2024-03-31"
    assert run.tags["ordersys/stage"] == "analytics"
    partitions = [m.partition for m in first.asset_materializations_for_node("daily_kpis")]
    assert partitions == [f"2024-03-{n:02d}" for n in range(1, 32)]
    planned = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=1000
    ).records
    planned_keys = [r.event_log_entry.dagster_event.asset_key for r in planned]
    # One planned event per day, and ONE for the unpartitioned leaderboard (not one per day).
    assert planned_keys.count(DAILY_KPIS) == 31 and planned_keys.count(LEADERBOARD) == 1
    # Each partition shows its own day; the run carries the range's totals.
    by_day = {m.partition: m.metadata for m in first.asset_materializations_for_node("daily_kpis")}
    for day, kpis in MARCH_BERLIN.items():
        assert {name: by_day[day.isoformat()][name].value for name in kpis.as_hash()} == kpis.as_hash()
    assert by_day["2024-03-10"]["run_days"].value == 31
    assert by_day["2024-03-31"]["order_count"].value == 0
    assert run.tags["ordersys/kpi_days"] == "31" and run.tags["ordersys/kpi_orders"] == "4"
    assert instance.get_run_by_id(run.run_id).tags["ordersys/kpi_net_revenue"] == "136.01 EUR"
    stored = store.read_days(MARCH_BERLIN)
    assert stored == {day: {k: str(v) for k, v in kpis.as_hash().items()} for day, kpis in MARCH_BERLIN.items()}
    assert store.read_day(d("2024-03-31")) == {k: "0" for k in DayKpis().as_hash()}
    assert all(e.passed for e in first.get_asset_check_evaluations())

    before = redis_snapshot(redis_resource)
    assert len(before) == 31 + 2  # 31 day hashes, the leaderboard and its names
    again = materialize_days(analytics, resources, d("2024-03-01"), d("2024-03-31"), instance=instance)
    assert again.success and redis_snapshot(redis_resource) == before


def test_wipe_then_backfill_restores_every_key_exactly(analytics, resources, redis_resource, march):
    assert materialize_days(analytics, resources, d("2024-03-01"), d("2024-03-20"), instance=None).success
    before = redis_snapshot(redis_resource)
    wipe(redis_resource)
    assert redis_snapshot(redis_resource) == {}
    assert materialize_days(analytics, resources, d("2024-03-01"), d("2024-03-20"), instance=None).success
    assert redis_snapshot(redis_resource) == before


def test_leaderboard_asset(analytics, resources, store, engine, march):
    result = dg.materialize([analytics.customer_leaderboard], resources=resources)
    assert result.success
    top = store.leaderboard_top(10)
    # Alice: 10000 + 2599 − 3000; Bob: 5000 + 2 − 1000.
    assert [(c.name, c.net_revenue_cents) for c in top] == [("Alice", 9_599), ("Bob", 4_002)]
    (materialization,) = materializations_of(result, LEADERBOARD)
    table = materialization.metadata["top_10"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [(r.data["rank"], r.data["customer"], r.data["net_revenue"]) for r in table.records] == [
        (1, "Alice", "95.99 EUR"), (2, "Bob", "40.02 EUR")]
    assert [c.name for c in table.schema.columns][:4] == ["rank", "customer", "email", "net_revenue"]
    assert materialization.metadata["dagster/row_count"].value == 2
    checks = checks_of(result)
    assert checks["sum_equals_net_revenue"].passed and checks["length_equals_customers_with_revenue"].passed


def test_the_checks_fail_on_tampered_redis_and_show_the_difference(
    analytics, resources, store, redis_resource, engine, march
):
    assert materialize_days(analytics, resources, d("2024-03-09"), d("2024-03-12"), instance=None).success
    client = redis_resource.client()
    client.hset(store.day_key(d("2024-03-10")), "order_count", "4")
    client.hset(store.day_key(d("2024-03-11")), "bonus", "1")
    client.delete(store.day_key(d("2024-03-12")))
    with engine.connect() as conn:
        expected = compute_range(conn, d("2024-03-09"), d("2024-03-12"), BERLIN)
        totals = net_revenue_totals(conn)
    check = redis_matches_database(expected, store.read_days(expected))
    assert not check.passed
    assert check.metadata["differences"].value == 3
    table = check.metadata["differing_fields"].value
    assert "| 2024-03-10 | order_count | 3 | 4 |" in table
    assert "| 2024-03-11 | bonus | (missing) | 1 |" in table
    assert "| 2024-03-12 | (hash) | present | (missing) |" in table

    client.zadd(redis_resource.key("leaderboard:customers"), {"999": 5})
    total_sum, length = leaderboard_checks(totals, *store.leaderboard_summary())
    assert not total_sum.passed and not length.passed
    assert total_sum.metadata["redis_cents"].value == totals.net_revenue_cents + 5
    assert length.metadata["redis_members"].value == totals.customers + 1

    # Re-materializing repairs Redis and the checks pass again.
    repaired = materialize_days(analytics, resources, d("2024-03-09"), d("2024-03-12"), instance=None)
    assert repaired.success and all(e.passed for e in repaired.get_asset_check_evaluations())


def test_orders_before_the_start_date_are_reported(settings, resources, march):
    late_start = build_analytics(dataclasses.replace(settings, timezone="Europe/Berlin", kpi_start_date="2024-03-10"))
    result = materialize_days(late_start, resources, d("2024-03-10"), d("2024-03-12"), instance=None)
    assert result.success  # a warning, not a failure
    check = checks_of(result)["no_orders_before_start"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["orders_before_start"].value == 1
    assert check.metadata["earliest_order_date_utc"].value == "2024-03-09 22:59:59"


def _finished_run(instance: dg.DagsterInstance, job_name: str):
    @dg.op
    def work() -> None:
        """Stands in for another area's job; only its name and run id matter here."""

    job = dg.GraphDefinition(name=job_name, node_defs=[work]).to_job()
    run_id = job.execute_in_process(instance=instance).run_id
    record = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[0]
    return instance.get_run_by_id(run_id), record.event_log_entry.dagster_event


def _sensor_context(analytics, instance, run, event, resources):
    return dg.build_run_status_sensor_context(
        sensor_name=analytics.after_work_sensor.name,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"database": resources["database"]},
    )


def test_freshness_sensor_requests_the_touched_days_and_the_leaderboard(analytics, resources, store, engine, march):
    instance = dg.DagsterInstance.ephemeral()
    run, event = _finished_run(instance, "order_workflow")
    with engine.connect() as conn:
        by_total = dict(conn.execute(select(orders.c.total_cents, orders.c.id)).all())
        processed = conn.execute(select(refunds.c.id).where(refunds.c.status == "processed")).scalars().all()
    march.order_event(by_total[10_000], run.run_id)  # 2024-03-10 in Berlin
    march.order_event(by_total[5_000], run.run_id)  # 2024-03-09
    march.refund_event(processed[0], run.run_id)  # processed 2024-03-12

    request = analytics.after_work_sensor(_sensor_context(analytics, instance, run, event, resources))
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"analytics-after-{run.run_id}"
    assert request.tags[RANGE_START_TAG] == "2024-03-09" and request.tags[RANGE_END_TAG] == "2024-03-12"
    assert request.tags["ordersys/stage"] == "analytics" and request.tags["ordersys/after_run"] == run.run_id
    assert request.asset_selection is None  # the days and the leaderboard, in one run

    # The requested run brings exactly those days and the leaderboard up to date.
    job = analytics.definitions(resources).resolve_job_def(JOB_NAME)
    assert job.execute_in_process(instance=instance, tags=request.tags).success
    assert store.read_days(MARCH_BERLIN) == {
        day: {k: str(v) for k, v in kpis.as_hash().items()} for day, kpis in MARCH_BERLIN.items()
    }
    assert store.read_day(d("2024-03-08")) is None and store.read_day(d("2024-03-13")) is None
    assert store.leaderboard_summary() == (2, 9_599 + 4_002)


def test_a_refresh_run_not_started_yet_takes_in_the_later_batches(analytics, resources, engine, march):
    """A burst of finished batches: the queued refresh run reads the database when it starts,
    so a batch whose days it covers adds no run; days outside it, or a run already reading, do."""
    instance = dg.DagsterInstance.ephemeral()
    with engine.connect() as conn:
        by_total = dict(conn.execute(select(orders.c.total_cents, orders.c.id)).all())
        processed = conn.execute(select(refunds.c.id).where(refunds.c.status == "processed")).scalars().first()

    def after(day_order_totals, refund=False):
        run, event = _finished_run(instance, "order_workflow")
        for total in day_order_totals:
            march.order_event(by_total[total], run.run_id)
        if refund:
            march.refund_event(processed, run.run_id)  # processed 2024-03-12
        return analytics.after_work_sensor(_sensor_context(analytics, instance, run, event, resources)), run

    first, _ = after([10_000, 5_000])  # 2024-03-09 .. 2024-03-10
    assert isinstance(first, dg.RunRequest)
    job = analytics.definitions(resources).resolve_job_def(JOB_NAME)
    queued = instance.create_run_for_job(job, tags=first.tags, status=dg.DagsterRunStatus.NOT_STARTED)

    inside, inside_run = after([10_000])
    assert isinstance(inside, dg.SkipReason)
    assert queued.run_id in inside.skip_message and inside_run.run_id in inside.skip_message
    outside, _ = after([10_000], refund=True)  # 2024-03-10 .. 2024-03-12
    assert isinstance(outside, dg.RunRequest)

    instance.handle_run_event(queued.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=JOB_NAME))
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.STARTED
    assert isinstance(after([10_000])[0], dg.RunRequest)  # started: it may have read already

    instance.create_run_for_job(job, tags={}, status=dg.DagsterRunStatus.NOT_STARTED,
                                asset_selection=frozenset({LEADERBOARD}))
    assert isinstance(after([10_000])[0], dg.RunRequest)  # a leaderboard run reads no days


def test_freshness_sensor_skips_what_changes_nothing(analytics, resources, engine, march):
    instance = dg.DagsterInstance.ephemeral()
    idle_run, idle_event = _finished_run(instance, "payment_settlement")
    result = analytics.after_work_sensor(_sensor_context(analytics, instance, idle_run, idle_event, resources))
    assert isinstance(result, dg.SkipReason) and "changed no order or refund" in result.skip_message

    other_run, other_event = _finished_run(instance, "notification_dispatch")
    with engine.connect() as conn:
        some_order = conn.execute(select(orders.c.id).limit(1)).scalar_one()
    march.order_event(some_order, other_run.run_id)
    result = analytics.after_work_sensor(_sensor_context(analytics, instance, other_run, other_event, resources))
    assert isinstance(result, dg.SkipReason) and "does not change analytics" in result.skip_message


def test_freshness_for_days_before_the_start_refreshes_only_the_leaderboard(settings, resources, engine):
    analytics = build_analytics(dataclasses.replace(settings, kpi_start_date="2024-06-01"))
    shop = Shop(engine)
    order = shop.order(shop.customer("Old"), datetime(2024, 1, 5, 12), 1_000)
    instance = dg.DagsterInstance.ephemeral()
    run, event = _finished_run(instance, "refund_processing")
    shop.order_event(order, run.run_id)
    request = analytics.after_work_sensor(_sensor_context(analytics, instance, run, event, resources))
    assert request.asset_selection == [LEADERBOARD]
    assert RANGE_START_TAG not in request.tags


def test_hourly_schedule_requests_yesterday_and_today(analytics, berlin):
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 31, 0, 0, tzinfo=BERLIN))
    request = analytics.hourly_schedule(context)
    assert request.tags[RANGE_START_TAG] == "2024-03-30" and request.tags[RANGE_END_TAG] == "2024-03-31"
    assert request.run_key == "analytics-hourly-2024-03-31T00:00:00+01:00"
    assert request.tags["ordersys/stage"] == "analytics"

    at_start = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 3, 1, 5, 0, tzinfo=BERLIN))
    request = analytics.hourly_schedule(at_start)
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2024-03-01", "2024-03-01")

    early = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 2, 1, 5, 0, tzinfo=BERLIN))
    assert isinstance(analytics.hourly_schedule(early), dg.SkipReason)
