"""`ordersys kpi` and `ordersys leaderboard`: read the KPIs and the leaderboard from Redis
(never the database, so they answer while the database is busy or away), and rebuild them
(`kpi backfill`, `kpi refresh`) in one in-process Dagster run."""

from __future__ import annotations

import time
from datetime import date, datetime

import click
from tabulate import tabulate

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore
from ordersys_pipelines.domain.money import grouped
from ordersys_pipelines.settings import Settings


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise click.ClickException(f"{option} {value!r} is not a date (expected YYYY-MM-DD)") from None


def _store(settings: Settings) -> AnalyticsStore:
    resource = runtime.resources(settings)["redis"]
    return AnalyticsStore(resource.client(), resource.key)


def _redis_settings() -> Settings:
    # Readers need Redis only: no schema upgrade, no database connection at all.
    return runtime.load_settings(need_redis=True, upgrade_schema=False)


@click.group(invoke_without_command=True)
@click.option("--date", "day", metavar="YYYY-MM-DD", help="The day to show (default: today, ORDERSYS_TIMEZONE).")
@click.pass_context
def kpi(ctx: click.Context, day: str | None) -> None:
    """Daily KPIs from Redis (`kpi:daily:YYYY-MM-DD`); `backfill` / `refresh` rebuild them."""
    if ctx.invoked_subcommand is not None:
        if day is not None:
            raise click.UsageError("--date applies to showing a day, not to a subcommand")
        return
    wanted = _parse_day(day, "--date")
    settings = _redis_settings()
    wanted = wanted or datetime.now(settings.tz).date()
    stored = _store(settings).read_day(wanted)
    if stored is None:
        raise click.ClickException(
            f"no KPIs for {wanted} in Redis; build them with `ordersys kpi backfill --from {wanted} --to {wanted}`"
        )
    try:
        values = {name: int(value) for name, value in stored.items()}
    except ValueError:
        raise click.ClickException(f"the Redis hash for {wanted} holds a non-integer value: {stored}") from None

    def money(name: str) -> str:
        return grouped(values.get(name, 0), settings.currency)

    rows = [
        ("Orders", values.get("order_count", 0)),
        ("Gross revenue", money("gross_revenue_cents")),
        ("Refunds", f"{values.get('refund_count', 0)} ({money('refund_amount_cents')})"),
        ("Net revenue", money("revenue_cents")),
        ("Average order value", money("average_order_value_cents")),
        ("Failed orders", values.get("failed_order_count", 0)),
        ("Cancelled orders", values.get("cancelled_order_count", 0)),
        ("Notifications sent", values.get("notifications_sent", 0)),
        ("Notifications failed", values.get("notifications_failed", 0)),
    ]
    click.echo(f"KPIs for {wanted} ({settings.timezone})")
    click.echo(tabulate(rows, headers=["KPI", "Value"], tablefmt="simple", colalign=("left", "right")))


@click.command()
@click.option("--top", "top", default=10, show_default=True, type=click.IntRange(min=1), help="How many customers.")
def leaderboard(top: int) -> None:
    """Customers by net revenue, from Redis (`leaderboard:customers`)."""
    settings = _redis_settings()
    ranked = _store(settings).leaderboard_top(top)
    if not ranked:
        click.echo("The leaderboard is empty (no revenue yet, or not built: `ordersys kpi refresh`).")
        return
    rows = [
        (c.rank, c.name, c.email or "", grouped(c.net_revenue_cents, settings.currency)) for c in ranked
    ]
    click.echo(
        tabulate(rows, headers=["Rank", "Customer", "Email", "Net revenue"], colalign=("right", "left", "left", "right"))
    )


def refresh_days(settings: Settings, first: date | None, last: date | None) -> None:
    """One in-process run of the refresh job over `first`..`last` (None: the leaderboard only),
    recorded in the instance; prints what it wrote, raises ClickException when it failed."""
    from ordersys_pipelines.assets.analytics import build_analytics, materialize_days

    started = time.perf_counter()
    result = materialize_days(
        build_analytics(settings),
        runtime.resources(settings),
        first,
        last,
        instance=runtime.instance(),
        tags={"ordersys/trigger": "cli"},
        log_level="WARNING",
    )
    seconds = time.perf_counter() - started
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity.value == "ERROR"
    ]
    warnings = [
        f"{e.check_name}: {e.metadata.get('orders_before_start').value} order(s) dated before the KPI start date"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity.value == "WARN" and "orders_before_start" in e.metadata
    ]
    span = f"{first} .. {last}" if first else "no days"
    if not result.success:
        detail = f"; failed checks: {', '.join(failed_checks)}" if failed_checks else ""
        raise click.ClickException(f"run {result.run_id} failed ({span}){detail}")
    if first is None or last is None:
        click.echo(f"run {result.run_id}: no KPI day to write; the leaderboard written in {seconds:.2f}s")
    else:
        days = (last - first).days + 1
        click.echo(f"run {result.run_id}: {days} day(s) {span} and the leaderboard written in {seconds:.2f}s")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@kpi.command()
@click.option("--from", "first", required=True, metavar="YYYY-MM-DD", help="First day (included).")
@click.option("--to", "last", required=True, metavar="YYYY-MM-DD", help="Last day (included).")
def backfill(first: str, last: str) -> None:
    """Recompute the days FROM..TO and the leaderboard in one run (a single-run backfill)."""
    first_day, last_day = _parse_day(first, "--from"), _parse_day(last, "--to")
    if first_day > last_day:
        raise click.ClickException(f"--from {first_day} is after --to {last_day}")
    settings = runtime.load_settings(need_redis=True)
    start = date.fromisoformat(settings.kpi_start_date)
    today = datetime.now(settings.tz).date()
    if first_day < start:
        raise click.ClickException(f"--from {first_day} is before the first KPI day {start} (ORDERSYS_KPI_START_DATE)")
    if last_day > today:
        raise click.ClickException(f"--to {last_day} is after today ({today}, {settings.timezone})")
    refresh_days(settings, first_day, last_day)


@kpi.command()
def refresh() -> None:
    """Recompute every day that has data (from the first to the last) and the leaderboard."""
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.analytics.days import local_day
    from ordersys_pipelines.domain.analytics.kpis import activity_span

    settings = runtime.load_settings(need_redis=True)
    with get_engine(settings.database_url).connect() as conn:
        span = activity_span(conn)
    if span is None:
        refresh_days(settings, None, None)
        return
    start = date.fromisoformat(settings.kpi_start_date)
    today = datetime.now(settings.tz).date()
    first = max(local_day(span[0], settings.tz), start)
    last = min(local_day(span[1], settings.tz), today)
    if first > last:
        refresh_days(settings, None, None)
        return
    refresh_days(settings, first, last)
