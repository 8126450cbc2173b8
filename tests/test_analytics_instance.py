"""Analytics runs on a real (SQLite) instance written from the project's dagster.yaml: each
partition's figures read back from the instance, and the stage pools that limit runs launched
from the catalog, which carry no stage tag when they are queued."""

from __future__ import annotations

import time
from datetime import date
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import test_analytics_assets as asset_tests
from analytics_data import MARCH_BERLIN, crafted_march
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from ordersys_pipelines.assets.analytics import (
    DAILY_KPIS,
    JOB_NAME,
    LEADERBOARD,
    materialize_days,
)
from ordersys_pipelines.assets.imports import ORDERS
from ordersys_pipelines.assets.stages import STAGE_POOLS
from ordersys_pipelines.cli import instance_home
from ordersys_pipelines.cli.stage_pools import apply_stage_pools, stage_tag_limits
from ordersys_pipelines.domain.analytics.kpis import KPI_FIELDS, compute_range
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore

BERLIN = ZoneInfo("Europe/Berlin")
# The Berlin March shop's fixtures, as the in-process analytics tests use them.
berlin, analytics, resources = asset_tests.berlin, asset_tests.analytics, asset_tests.resources
# Where a run launched from the UI comes from (a queued run must name one).
ASSET_JOB_ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ordersys"), "__repository__"), "__ASSET_JOB"
)
RANGE = {"dagster/asset_partition_range_start": "2024-03-01", "dagster/asset_partition_range_end": "2024-03-31"}


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """The instance `make up` writes (SQLite variant), with its stage pools set."""
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    home = instance_home.write(tmp_path / "dagster_home")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        apply_stage_pools(instance)
        yield instance


def latest_of_day(instance: dg.DagsterInstance, day: str) -> dg.AssetMaterialization:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=DAILY_KPIS, asset_partitions=[day]), limit=1
    ).records
    assert len(records) == 1, day
    return records[0].asset_materialization


def test_each_partition_of_a_range_run_shows_its_own_day(instance, analytics, resources, redis_resource, engine):
    crafted_march(engine)
    result = materialize_days(analytics, resources, date(2024, 3, 1), date(2024, 3, 31), instance=instance)
    assert result.success
    with engine.connect() as conn:
        database = compute_range(conn, date(2024, 3, 1), date(2024, 3, 31), BERLIN)
    stored = AnalyticsStore(redis_resource.client(), redis_resource.key).read_days(database)
    assert set(MARCH_BERLIN) <= set(database)

    for day, kpis in database.items():
        metadata = latest_of_day(instance, day.isoformat()).metadata
        shown = {name: metadata[name].value for name in KPI_FIELDS}
        assert shown == kpis.as_hash() == {k: int(v) for k, v in stored[day].items()}, day
        assert metadata["net_revenue_amount"].value == pytest.approx(kpis.revenue_cents / 100)
        assert metadata["run_days"].value == 31  # how the run went: the same on every partition
        assert not [name for name in metadata if name.startswith(("total_", "days_written"))]
    # The busiest day is not the range's total: 2024-03-10 shows 3 orders, the run 4.
    assert latest_of_day(instance, "2024-03-10").metadata["order_count"].value == 3
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["ordersys/kpi_orders"] == "4" and run.tags["ordersys/kpi_days"] == "31"


def test_the_leaderboard_follows_the_days_in_lineage_and_once_per_run(instance, analytics, resources, engine):
    crafted_march(engine)
    assert analytics.customer_leaderboard.asset_deps[LEADERBOARD] == {ORDERS, DAILY_KPIS}
    assert analytics.daily_kpis.asset_deps[DAILY_KPIS] == {ORDERS}
    result = materialize_days(analytics, resources, date(2024, 3, 1), date(2024, 3, 31), instance=instance)
    steps = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert steps == ["daily_kpis", "rebuild_customer_leaderboard"]
    assert len(instance.fetch_materializations(LEADERBOARD, limit=10).records) == 1
    planned = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=1000
    ).records
    assert [r.event_log_entry.dagster_event.asset_key for r in planned].count(LEADERBOARD) == 1


def test_every_asset_a_catalog_run_can_launch_is_in_its_stage_pool(settings):
    from ordersys_pipelines.definitions import build_defs

    graph = build_defs(settings).resolve_asset_graph()
    pools = {key.to_user_string(): graph.assets_def_for_key(key).node_def.pool for key in graph.executable_asset_keys}
    assert pools == {"orders_csv": "import", "product_catalog": "import",
                     "daily_kpis": "analytics", "customer_leaderboard": "analytics"}
    assert set(pools.values()) == set(STAGE_POOLS)


def test_the_stage_pools_take_the_stage_tag_limits(instance):
    tags = stage_tag_limits(instance)
    assert tags["analytics"] == 1 and tags["import"] == 2
    limits = {pool.name: pool.limit for pool in instance.event_log_storage.get_pool_limits()}
    assert limits == {"analytics": 1, "import": 2}
    config = instance.get_concurrency_config().pool_config
    assert config.pool_granularity.value == "run" and config.default_pool_limit == 1


def test_a_catalog_run_without_a_stage_tag_gets_it_when_it_runs(instance, analytics, resources, engine):
    crafted_march(engine)
    job = analytics.definitions(resources).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance, tags={**RANGE, "dagster/backfill": "abcdefgh"}, asset_selection=[DAILY_KPIS]
    )
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run.job_name == "__ASSET_JOB"
    assert run.tags["ordersys/stage"] == "analytics" and run.tags["dagster/backfill"] == "abcdefgh"


def _queued(instance, job, selection, tags) -> dg.DagsterRun:
    run = instance.create_run_for_job(job, asset_selection=set(selection), tags=tags, status=dg.DagsterRunStatus.QUEUED,
                                      remote_job_origin=ASSET_JOB_ORIGIN)
    return instance.get_run_by_id(run.run_id)


def _dequeueable(instance) -> set[str]:
    """The runs the run queue daemon would launch now (its own selection, nothing launched)."""
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        return {run.run_id for run in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)}


def test_two_catalog_runs_of_the_analytics_assets_never_run_at_once(instance, analytics, resources):
    """Two UI launches (job __ASSET_JOB, no stage tag): the analytics pool admits one run at a
    time, and the refresh job's runs (sensor, schedule) share the pool with them."""
    definitions = analytics.definitions(resources)
    job = definitions.resolve_implicit_global_asset_job_def()
    first = _queued(instance, job, [DAILY_KPIS], {**RANGE, "dagster/backfill": "b1"})
    second = _queued(instance, job, [LEADERBOARD], {})
    assert "ordersys/stage" not in first.tags and "ordersys/stage" not in second.tags
    assert first.run_op_concurrency.all_pools == {"analytics"}
    assert second.run_op_concurrency.all_pools == {"analytics"}

    assert _dequeueable(instance) == {first.run_id}  # one of the two, the older
    instance.handle_new_event(_run_event(first, dg.DagsterEventType.RUN_START))
    assert _dequeueable(instance) == set()  # the pool is full while the first runs
    refresh = definitions.resolve_job_def(JOB_NAME)
    third = _queued(instance, refresh, [DAILY_KPIS, LEADERBOARD], {**RANGE, "ordersys/stage": "analytics"})
    assert _dequeueable(instance) == set()
    instance.handle_new_event(_run_event(first, dg.DagsterEventType.RUN_SUCCESS))
    assert _dequeueable(instance) == {second.run_id}
    instance.handle_new_event(_run_event(second, dg.DagsterEventType.RUN_START))
    instance.handle_new_event(_run_event(second, dg.DagsterEventType.RUN_FAILURE))
    assert _dequeueable(instance) == {third.run_id}


def _run_event(run: dg.DagsterRun, kind: dg.DagsterEventType) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None, level="DEBUG", user_message="", run_id=run.run_id, timestamp=time.time(),
        dagster_event=dg.DagsterEvent(kind.value, job_name=run.job_name),
    )


def test_a_backfill_from_the_catalog_is_held_by_the_pool_and_builds_the_leaderboard_once(
    instance, settings, engine, monkeypatch
):
    """A backfill as the UI launches it (asset backfill, no tags), through the backfill daemon's
    own iteration on the code location: one run for the range of days, in the analytics pool;
    the leaderboard is requested once, after that run, and each run gets its stage tag."""
    import logging

    from dagster._core.execution.api import execute_run
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._utils.hosted_user_process import recon_job_from_origin

    monkeypatch.setenv("ORDERSYS_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("ORDERSYS_KPI_START_DATE", "2024-03-01")
    crafted_march(engine)
    target = ModuleTarget("ordersys_pipelines.definitions", "defs", None, "ordersys")
    logger = logging.getLogger("backfill_test")

    def iterate(context) -> list[dg.DagsterRun]:
        list(execute_backfill_iteration(context, logger))
        return [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.QUEUED]

    def run_it(run: dg.DagsterRun) -> None:
        instance.handle_new_event(_run_event(run, dg.DagsterEventType.RUN_STARTING))  # as a launch does
        assert execute_run(recon_job_from_origin(run.job_code_origin), instance.get_run_by_id(run.run_id),
                           instance).success

    with create_test_daemon_workspace_context(target, instance) as context:
        asset_graph = context.create_request_context().asset_graph
        days = [f"2024-03-{n:02d}" for n in range(8, 13)]
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id="h15bfill", asset_graph=asset_graph, partition_names=days,
            asset_selection=[DAILY_KPIS, LEADERBOARD], backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None,
        ))
        (days_run,) = iterate(context)
        assert days_run.job_name == "__ASSET_JOB" and days_run.asset_selection == {DAILY_KPIS}
        assert "ordersys/stage" not in days_run.tags  # queued without a stage tag ...
        assert days_run.run_op_concurrency.all_pools == {"analytics"}  # ... but in the stage's pool
        assert days_run.tags["dagster/asset_partition_range_start"] == "2024-03-08"
        assert days_run.tags["dagster/asset_partition_range_end"] == "2024-03-12"
        run_it(days_run)
        assert instance.get_run_by_id(days_run.run_id).tags["ordersys/stage"] == "analytics"

        (board_run,) = iterate(context)
        assert board_run.asset_selection == {LEADERBOARD}
        run_it(board_run)
        assert iterate(context) == []
    assert len(instance.fetch_materializations(LEADERBOARD, limit=10).records) == 1
    assert latest_of_day(instance, "2024-03-10").metadata["order_count"].value == 3


def test_stage_pools_without_stage_limits_keep_the_default(tmp_path):
    """A dagster.yaml with no stage tag limits (or a per-value limit) sets no pool: each keeps
    the default limit of 1, never unlimited."""
    home = tmp_path / "bare_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    granularity: run\n    default_limit: 1\n  runs:\n    max_concurrent_runs: 4\n"
        "    tag_concurrency_limits:\n      - key: ordersys/stage\n        value:\n          applyLimitPerUniqueValue: true\n"
        "        limit: 3\n      - key: other\n        value: analytics\n        limit: 9\n",
        encoding="utf-8",
    )
    with dg.DagsterInstance.from_config(str(home)) as bare:
        assert stage_tag_limits(bare) == {}
        assert apply_stage_pools(bare) == {}
        assert bare.event_log_storage.get_pool_limits() == []
        assert bare.global_op_concurrency_default_limit == 1


def test_the_limit_set_by_hand_is_reset_to_the_stage_limit(instance):
    instance.event_log_storage.set_concurrency_slots("analytics", 5)
    assert apply_stage_pools(instance) == {"analytics": 1, "import": 2}
    assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}["analytics"] == 1
