"""Analytics assets: `daily_kpis` (one partition per local day) and `customer_leaderboard`,
computed from the database and written to Redis, with their checks, the job that refreshes
them, a run-status sensor that follows the work, and an hourly schedule.

Everything depends on settings (time zone, first KPI day), so `build_analytics(settings)`
builds the definitions when the code location loads (ordersys_pipelines/defs/analytics.py).
"""

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dagster as dg

from ordersys_pipelines.assets.imports import ORDERS
from ordersys_pipelines.assets.stages import ANALYTICS_POOL, tag_run_with_stage
from ordersys_pipelines.dagster_warnings import accepted_dagster_warnings
from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.domain.analytics.checks import Difference, day_differences, leaderboard_differences
from ordersys_pipelines.domain.analytics.days import local_midnight_utc
from ordersys_pipelines.domain.analytics.freshness import touched_days
from ordersys_pipelines.domain.analytics.isolated import LeftOut, compute_range_isolating
from ordersys_pipelines.domain.analytics.kpis import (
    KPI_FIELDS,
    DayKpis,
    consistent_read,
    orders_before_start,
    total,
)
from ordersys_pipelines.domain.analytics.leaderboard import (
    NetRevenueTotals,
    customer_net_revenue_isolating,
    net_revenue_totals,
)
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore, RankedCustomer
from ordersys_pipelines.domain.money import grouped
from ordersys_pipelines.domain.tables import markdown_table
from ordersys_pipelines.jobs.refunds import refund_processing
from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.jobs.workflow import order_workflow
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.redis import RedisResource
from ordersys_pipelines.settings import Settings
from ordersys_pipelines.step_retries import retry_transient

# The jobs whose successful runs change what the KPIs count (defined by other areas).
WATCHED_JOBS = ("order_workflow", "payment_settlement", "refund_processing")
JOB_NAME = "analytics_refresh"
STAGE_TAGS = {"ordersys/stage": "analytics"}
GROUP = "analytics"
OWNERS = ["team:analytics"]
DAILY_KPIS = dg.AssetKey("daily_kpis")
LEADERBOARD = dg.AssetKey("customer_leaderboard")
# Dagster's run tags for a run over a range of partitions (what a single-run backfill sets).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The totals of a KPI run, on the run (run_totals_tags).
KPI_DAYS_TAG, KPI_ORDERS_TAG, KPI_NET_REVENUE_TAG = "ordersys/kpi_days", "ordersys/kpi_orders", "ordersys/kpi_net_revenue"
_MAX_DIFFERENCES_SHOWN = 25


def partition_range_tags(first: date, last: date) -> dict[str, str]:
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


@dataclass(frozen=True)
class Analytics:
    settings: Settings
    partitions_def: dg.DailyPartitionsDefinition
    daily_kpis: dg.AssetsDefinition
    customer_leaderboard: dg.AssetsDefinition
    job: object  # the asset job (an unresolved job definition until bound to Definitions)
    after_work_sensor: dg.RunStatusSensorDefinition
    hourly_schedule: dg.ScheduleDefinition

    def definitions(self, resources: dict | None = None) -> dg.Definitions:
        return dg.Definitions(
            assets=[self.daily_kpis, self.customer_leaderboard],
            jobs=[self.job],
            sensors=[self.after_work_sensor],
            schedules=[self.hourly_schedule],
            resources=resources,
        )


def local_today(settings: Settings, now: datetime | None = None) -> date:
    return (now or datetime.now(settings.tz)).astimezone(settings.tz).date()


def refresh_request(
    settings: Settings, first: date | None, last: date | None, run_key: str | None, tags: dict | None = None
) -> dg.RunRequest:
    """One run of the refresh job: the days `first`..`last` clamped to the partitions that exist
    (the first KPI day to today) plus the leaderboard; only the leaderboard when no day is left."""
    tags = {**STAGE_TAGS, **(tags or {})}
    if first is not None and last is not None:
        first = max(first, date.fromisoformat(settings.kpi_start_date))
        last = min(last, local_today(settings))
    if first is None or last is None or first > last:
        return dg.RunRequest(run_key=run_key, asset_selection=[LEADERBOARD], tags=tags)
    return dg.RunRequest(run_key=run_key, tags={**tags, **partition_range_tags(first, last)})


# A refresh run in these states has not read the database yet.
NOT_YET_READING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]


def waiting_refresh_covering(instance: dg.DagsterInstance, request: dg.RunRequest) -> str | None:
    """A refresh run that has not started reading and covers what the request asks for: its
    days and the leaderboard. After a burst of finished batches, one queued run then brings all
    of them into Redis, rather than a run per batch waiting its turn in the analytics pool."""
    first, last = request.tags.get(RANGE_START_TAG), request.tags.get(RANGE_END_TAG)
    wanted = {LEADERBOARD} if first is None else {DAILY_KPIS, LEADERBOARD}
    for record in instance.get_run_records(filters=dg.RunsFilter(job_name=JOB_NAME, statuses=NOT_YET_READING)):
        run = record.dagster_run
        if run.asset_selection is not None and not wanted <= run.asset_selection:
            continue
        if first is None or (run.tags.get(RANGE_START_TAG, "9999") <= first and last <= run.tags.get(RANGE_END_TAG, "")):
            return run.run_id
    return None


def _differences_md(differences: list[Difference]) -> dg.MetadataValue:
    rows = [[d.subject, d.field, d.database, d.redis] for d in differences[:_MAX_DIFFERENCES_SHOWN]]
    return dg.MetadataValue.md(markdown_table(["day", "field", "database", "redis"], rows))


TOP_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("rank", "int"),
        dg.TableColumn("customer", "string"),
        dg.TableColumn("email", "string"),
        dg.TableColumn("net_revenue", "string", description="Net revenue in the shop's currency"),
        dg.TableColumn("net_revenue_cents", "int"),
    ]
)


def _top_table(top: list[RankedCustomer], currency: str) -> dg.MetadataValue:
    """The top customers as a Dagster table: the UI sizes and scrolls its columns itself, so a
    long name or email no longer pushes the figures out of sight."""
    records = [
        dg.TableRecord({"rank": c.rank, "customer": c.name, "email": c.email or "",
                        "net_revenue": grouped(c.net_revenue_cents, currency), "net_revenue_cents": c.net_revenue_cents})
        for c in top
    ]
    return dg.MetadataValue.table(records, schema=TOP_SCHEMA)


def _left_out_metadata(left_out: list[LeftOut]) -> dict:
    """Rows that could not be counted (domain.analytics.isolated), named with the reason."""
    if not left_out:
        return {"rows_left_out": 0}
    rows = [[r.table, str(r.row_id), r.reason] for r in left_out[:_MAX_DIFFERENCES_SHOWN]]
    return {"rows_left_out": len(left_out),
            "rows_left_out_sample": dg.MetadataValue.md(markdown_table(["table", "id", "reason"], rows))}


def _amount(cents: int) -> dg.MetadataValue:
    """An amount in major units as a float metric, for the catalog's plots only; the cents
    fields beside it are the exact figures."""
    return dg.MetadataValue.float(cents / 100)


def day_metadata(day: DayKpis, currency: str) -> dict:
    """The figures of one day, as its partition's materialization shows (and plots) them."""
    values = day.as_hash()
    return {
        **{name: values[name] for name in KPI_FIELDS},
        "net_revenue": grouped(values["revenue_cents"], currency),
        "net_revenue_amount": _amount(values["revenue_cents"]),
        "gross_revenue_amount": _amount(values["gross_revenue_cents"]),
        "average_order_value_amount": _amount(values["average_order_value_cents"]),
    }


def run_totals_tags(summed: DayKpis, days: int, currency: str) -> dict[str, str]:
    """The totals of a run over several days: tags on the run (its page and the runs list
    show them), never on a partition, whose metadata is its own day's."""
    return {
        KPI_DAYS_TAG: str(days),
        KPI_ORDERS_TAG: str(summed.order_count),
        KPI_NET_REVENUE_TAG: grouped(summed.revenue_cents, currency),
    }


def redis_matches_database(
    expected: dict[date, DayKpis], stored: dict[date, dict[str, str] | None]
) -> dg.AssetCheckResult:
    """The daily check: each day's hash against the database aggregate, differences shown."""
    differences = day_differences(expected, stored)
    return dg.AssetCheckResult(
        check_name="redis_matches_database",
        passed=not differences,
        metadata={
            "days_checked": len(expected),
            "differences": len(differences),
            **({"differing_fields": _differences_md(differences)} if differences else {}),
        },
    )


def leaderboard_checks(expected: NetRevenueTotals, members: int, total_cents: int) -> list[dg.AssetCheckResult]:
    """The leaderboard's sum and length against the database totals."""
    differences = {d.field for d in leaderboard_differences(expected, members, total_cents)}
    return [
        dg.AssetCheckResult(
            check_name="sum_equals_net_revenue",
            passed="sum" not in differences,
            metadata={"database_cents": expected.net_revenue_cents, "redis_cents": total_cents},
        ),
        dg.AssetCheckResult(
            check_name="length_equals_customers_with_revenue",
            passed="length" not in differences,
            metadata={"database_customers": expected.customers, "redis_members": members},
        ),
    ]


def build_analytics(settings: Settings) -> Analytics:
    tz = settings.tz
    currency = settings.currency
    first_day = date.fromisoformat(settings.kpi_start_date)
    start_utc = local_midnight_utc(first_day, tz)
    # end_offset=1: today's partition exists while the day runs, so it is kept fresh too.
    partitions_def = dg.DailyPartitionsDefinition(
        start_date=settings.kpi_start_date, timezone=settings.timezone, end_offset=1
    )

    with accepted_dagster_warnings():  # backfill_policy= is beta (see dagster_warnings.py)

        @dg.asset(
            name="daily_kpis",
            description=(
                "KPIs of one local day (ORDERSYS_TIMEZONE) in the Redis hash kpi:daily:YYYY-MM-DD: finalized "
                "orders and gross revenue by order date, processed refunds by processing date, net revenue, "
                "average order value, failed and cancelled orders, notifications sent and failed. A range "
                "of days is computed with a few grouped queries and written in one MULTI/EXEC."
            ),
            partitions_def=partitions_def,
            backfill_policy=dg.BackfillPolicy.single_run(),
            pool=ANALYTICS_POOL,
            deps=[ORDERS],
            group_name=GROUP,
            owners=OWNERS,
            kinds={"redis", "sql"},
            check_specs=[
                dg.AssetCheckSpec(
                    "redis_matches_database",
                    asset="daily_kpis",
                    blocking=True,
                    description="Every hash written equals the database aggregate of its day, field by field.",
                ),
                dg.AssetCheckSpec(
                    "no_orders_before_start",
                    asset="daily_kpis",
                    blocking=True,
                    description=(
                        "Orders dated before ORDERSYS_KPI_START_DATE have no partition; they are reported "
                        "here (warning) instead of silently left out. Lower the start date to count them."
                    ),
                ),
            ],
        )
        @retry_transient
        def daily_kpis(
            context: dg.AssetExecutionContext, database: DatabaseResource, redis: RedisResource
        ) -> dg.MaterializeResult:
            key_range = context.partition_key_range
            first, last = date.fromisoformat(key_range.start), date.fromisoformat(key_range.end)
            started = time.perf_counter()
            with consistent_read(database.engine) as conn:
                counted = compute_range_isolating(conn, first, last, tz)
                early = orders_before_start(conn, start_utc)
            kpis = counted.kpis
            if counted.left_out:
                context.log.warning(f"{len(counted.left_out)} row(s) left out of the KPIs: {counted.left_out[:3]}")
            sql_seconds = time.perf_counter() - started
            store = AnalyticsStore(redis.client(), redis.key)
            store.write_days({day: value.as_hash() for day, value in kpis.items()})
            stored = store.read_days(kpis)
            seconds = time.perf_counter() - started
            summed = total(kpis)
            context.log.info(f"wrote {len(kpis)} day(s) {first}..{last} in {seconds:.3f}s: {summed.order_count} "
                             f"orders, net revenue {grouped(summed.revenue_cents, currency)}")

            checks = [
                redis_matches_database(kpis, stored),
                dg.AssetCheckResult(
                    check_name="no_orders_before_start",
                    passed=early.count == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "kpi_start_date": settings.kpi_start_date,
                        "orders_before_start": early.count,
                        "finalized_orders_before_start": early.finalized_count,
                        "earliest_order_date_utc": str(early.earliest) if early.earliest else "",
                    },
                ),
            ]
            # Each partition's materialization carries its own day's figures, also in a range run;
            # what the MaterializeResult says is on every partition, so it only says how the
            # run that wrote them went.
            for day, value in kpis.items():
                context.add_asset_metadata(day_metadata(value, currency), partition_key=day.isoformat())
            tag_run_with_stage(context, "analytics", **run_totals_tags(summed, len(kpis), currency))
            return dg.MaterializeResult(
                metadata={
                    "run_first_day": first.isoformat(),
                    "run_last_day": last.isoformat(),
                    "run_days": len(kpis),
                    "sql_seconds": round(sql_seconds, 4),
                    "seconds": round(seconds, 4),
                    "days_per_second": round(len(kpis) / seconds, 1) if seconds else 0.0,
                    **_left_out_metadata(counted.left_out),
                },
                check_results=checks,
            )

    # The leaderboard follows the KPIs: declared as a dependency on every day of daily_kpis
    # (AllPartitionMapping), so the lineage reads orders -> daily_kpis -> customer_leaderboard,
    # the refresh job runs its step after the days, and a backfill builds it once, after the
    # whole range. Its op keeps the name `rebuild_customer_leaderboard` for one reason only:
    # Dagster 1.13 gives a run the partitions definition of the asset of the last step in
    # step-key order (DagsterInstance.create_run), and the dependency does not change that
    # order. Were daily_kpis last, a range run would log a planned event for every day against
    # this unpartitioned asset (31 on a 31-day run, 365 on a year's backfill). A test guards it.
    @dg.multi_asset(
        name="rebuild_customer_leaderboard",
        pool=ANALYTICS_POOL,
        specs=[
            dg.AssetSpec(
                "customer_leaderboard",
                description=(
                    "Net revenue per customer (finalized, shipped and delivered orders minus processed "
                    "refunds) in the Redis sorted set leaderboard:customers, names in "
                    "leaderboard:customers:names; rebuilt under temporary keys and renamed into place "
                    "atomically."
                ),
                deps=[ORDERS, dg.AssetDep(daily_kpis, partition_mapping=dg.AllPartitionMapping())],
                group_name=GROUP,
                owners=OWNERS,
                kinds={"redis", "sql"},
            )
        ],
        check_specs=[
            dg.AssetCheckSpec(
                "sum_equals_net_revenue",
                asset="customer_leaderboard",
                blocking=True,
                description="The scores add up to total gross revenue minus total processed refunds.",
            ),
            dg.AssetCheckSpec(
                "length_equals_customers_with_revenue",
                asset="customer_leaderboard",
                blocking=True,
                description="One member per customer with a finalized order or a processed refund.",
            ),
        ],
    )
    @retry_transient
    def customer_leaderboard(
        context: dg.AssetExecutionContext, database: DatabaseResource, redis: RedisResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        with consistent_read(database.engine) as conn:
            ranked = customer_net_revenue_isolating(conn)
            expected = net_revenue_totals(conn, excluding=list(ranked.left_out))
        entries = ranked.entries
        if ranked.left_out:
            context.log.warning(f"{len(ranked.left_out)} customer(s) left out of the leaderboard: "
                                f"{list(ranked.left_out.items())[:3]}")
        store = AnalyticsStore(redis.client(), redis.key)
        store.write_leaderboard(entries)
        members, total_cents = store.leaderboard_summary()
        seconds = time.perf_counter() - started
        tag_run_with_stage(context, "analytics")
        context.log.info(f"leaderboard of {len(entries)} customers in {seconds:.3f}s")

        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(entries),
                "total_net_revenue": grouped(expected.net_revenue_cents, currency),
                "total_net_revenue_cents": expected.net_revenue_cents,
                "top_10": _top_table(store.leaderboard_top(10), currency),
                "customers_left_out": len(ranked.left_out),
                **({"customers_left_out_sample": dg.MetadataValue.md(markdown_table(
                    ["customer id", "reason"],
                    [[str(c), why] for c, why in list(ranked.left_out.items())[:_MAX_DIFFERENCES_SHOWN]]))}
                   if ranked.left_out else {}),
                "seconds": round(seconds, 4),
            },
            check_results=leaderboard_checks(expected, members, total_cents),
        )

    job = dg.define_asset_job(
        JOB_NAME,
        selection=[daily_kpis, customer_leaderboard],
        description="Recompute a range of daily KPI partitions and the customer leaderboard into Redis.",
        tags=STAGE_TAGS,
    )

    @dg.run_status_sensor(
        name="analytics_after_work",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[order_workflow, payment_settlement, refund_processing],
        request_job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"After a successful run of {', '.join(WATCHED_JOBS)}: one run over the span of days its "
            "orders and refunds fall on, plus the leaderboard (run key from the finished run's id)."
        ),
    )
    def analytics_after_work(context: dg.RunStatusSensorContext, database: DatabaseResource):
        finished = context.dagster_run
        # monitored_jobs selects the runs the daemon hands over; this keeps a direct call honest.
        if finished.job_name not in WATCHED_JOBS:
            return dg.SkipReason(f"run of {finished.job_name} does not change analytics")
        with reading(database.engine) as conn:
            touched = touched_days(conn, finished.run_id, tz)
        if touched is None:
            return dg.SkipReason(f"run {finished.run_id} of {finished.job_name} changed no order or refund")
        # One run over the covering span, not one per day: the days in a gap are recomputed to
        # the same values (idempotent), which costs far less than a run each.
        request = refresh_request(
            settings,
            touched.first,
            touched.last,
            run_key=f"analytics-after-{finished.run_id}",
            tags={"ordersys/after_run": finished.run_id, "ordersys/after_job": finished.job_name},
        )
        waiting = waiting_refresh_covering(context.instance, request)
        if waiting:
            return dg.SkipReason(f"run {waiting} of {JOB_NAME} has not started yet and covers the days of "
                                 f"run {finished.run_id}: it reads them when it starts")
        return request

    @dg.schedule(
        name="analytics_hourly",
        cron_schedule="0 * * * *",
        job=job,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every hour: today's and yesterday's KPI partitions and the leaderboard, in one run.",
    )
    def analytics_hourly(context: dg.ScheduleEvaluationContext):
        # build_schedule_from_partitioned_job would request only the latest partition, one run
        # per day; here one run covers yesterday (late refunds and notifications) and today.
        now = context.scheduled_execution_time or datetime.now(tz)
        today = local_today(settings, now)
        if today < first_day:
            return dg.SkipReason(f"KPIs start on {first_day}")
        return refresh_request(
            settings, today - timedelta(days=1), today, run_key=f"analytics-hourly-{now.astimezone(tz).isoformat()}"
        )

    return Analytics(
        settings=settings,
        partitions_def=partitions_def,
        daily_kpis=daily_kpis,
        customer_leaderboard=customer_leaderboard,
        job=job,
        after_work_sensor=analytics_after_work,
        hourly_schedule=analytics_hourly,
    )


def materialize_days(
    analytics: Analytics,
    resources: dict,
    first: date | None,
    last: date | None,
    *,
    instance: dg.DagsterInstance | None,
    leaderboard: bool = True,
    tags: dict | None = None,
    log_level: str | None = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run of the refresh job over `first`..`last` (and the leaderboard), as a
    single-run backfill would do it; without days, only the leaderboard. `log_level` quiets
    the console logger (the run's events are recorded in the instance either way)."""
    job = analytics.definitions(resources).resolve_job_def(JOB_NAME)
    run_tags = {**(tags or {})}
    if first is not None and last is not None:
        run_tags.update(partition_range_tags(first, last))
        selection = None if leaderboard else [DAILY_KPIS]
    else:
        selection = [LEADERBOARD]
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}} if log_level else None
    return job.execute_in_process(
        run_config=run_config, instance=instance, tags=run_tags, asset_selection=selection, raise_on_error=False
    )

