"""`ordersys demo`: the system on a generated file, step by step.

Each step is one function call below, so later stages (workflow, refunds, notifications, KPIs)
add their own step to the sequence.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ordersys_pipelines.cli import instance_home, runtime
from ordersys_pipelines.cli.analytics import kpi, leaderboard, refresh
from ordersys_pipelines.cli.console import console, plain_text
from ordersys_pipelines.cli.imports import import_file, print_catalog_summary, print_import_summary
from ordersys_pipelines.cli.notifications import report
from ordersys_pipelines.cli.process import process
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import customers, order_lines, orders, products
from ordersys_pipelines.domain.imports.catalog import load_catalog
from ordersys_pipelines.domain.imports.generate import generate_orders, write_catalog
from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.refunds.requests import RefundRefused, request_refund
from ordersys_pipelines.settings import Settings

DEMO_DIR = Path("data/demo")


def step(title: str) -> None:
    console().rule(f"[bold]{title}")


def print_counts(settings: Settings) -> None:
    with get_engine(settings.database_url).connect() as conn:
        totals = {
            "customers": conn.execute(select(func.count()).select_from(customers)).scalar_one(),
            "products": conn.execute(select(func.count()).select_from(products)).scalar_one(),
            "orders": conn.execute(select(func.count()).select_from(orders)).scalar_one(),
            "order lines": conn.execute(select(func.count()).select_from(order_lines)).scalar_one(),
        }
        by_status = conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status).order_by(orders.c.status)).all()
    table = Table(title="Database", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for label, value in totals.items():
        table.add_row(label, f"{value:,}")
    for status, count in by_status:
        table.add_row(f"orders {status}", f"{count:,}")
    console().print(table)


def busiest_day(settings: Settings) -> str | None:
    """The order date with the most orders: the day whose KPIs the demo shows before and after."""
    with get_engine(settings.database_url).connect() as conn:
        day = func.date(orders.c.order_date)
        row = conn.execute(select(day).group_by(day).order_by(func.count().desc(), day).limit(1)).first()
    return str(row[0]) if row else None


REFUND_COLUMNS = ("order / reference", "amount", "type", "status", "note")
_TABLE_MIN_WIDTH = 80  # below it, one refund per line: a squeezed table would cut the refs


def print_refunds(rows: list[tuple[str, str, str, str, str, str]]) -> None:
    """(order ref, reference, amount, type, status, note) per request. Refs and references are
    what an operator copies: shown whole, never cut with an ellipsis. The reference goes under
    its order's ref so the table fits 80 columns; a narrower terminal gets plain lines."""
    out = console()
    if out.width < _TABLE_MIN_WIDTH:
        out.print("Refund requests")
        for order_ref, reference, *rest in rows:
            out.print(plain_text(" ".join([order_ref, reference, *(value for value in rest if value)])))
        return
    table = Table(title="Refund requests")
    for column in REFUND_COLUMNS:
        folding = column == "note"
        table.add_column(column, justify="right" if column == "amount" else "left",
                         no_wrap=not folding, overflow="fold")
    for order_ref, reference, *rest in rows:
        table.add_row(Text("\n").join([plain_text(order_ref), plain_text(reference)]), *(plain_text(v) for v in rest))
    out.print(table)


def request_demo_refunds(settings: Settings, count: int, seed: int) -> None:
    """Refund `count` finalized orders: the first half in full, the rest 30 %; the first request
    is sent twice with the same reference to show it is one refund."""
    with get_engine(settings.database_url).connect() as conn:
        chosen = conn.execute(
            select(orders.c.order_ref, orders.c.total_cents)
            .where(orders.c.status == "finalized")
            .order_by(orders.c.order_ref)
            .limit(count)
        ).all()
    rows = []
    requests = [(ref, total, i < (count + 1) // 2) for i, (ref, total) in enumerate(chosen)]
    if requests:
        requests.insert(1, requests[0])  # the same request again: idempotent
    engine = get_engine(settings.database_url)
    for order_ref, total, full in requests:
        reference = f"demo-{seed}-{order_ref}"
        with engine.connect() as conn:
            try:
                result = request_refund(
                    conn, order_ref, None if full else max(1, total * 30 // 100), full=full,
                    reference=reference, reason="demo refund",
                )
                note = "new" if result.created else "repeated: same refund"
                refund = result.refund
                rows.append((order_ref, reference, plain(refund.amount_cents), refund.type, refund.status, note))
            except RefundRefused as refused:
                rows.append((order_ref, reference, "", "", "rejected", refused.reason))
    print_refunds(rows)


def show_before(ctx: click.Context, command: click.Command, **params) -> None:
    """Run a read command; before the first KPI run there may be nothing to read yet."""
    try:
        ctx.invoke(command, **params)
    except click.ClickException as nothing_yet:
        console().print(f"[dim]{nothing_yet.message}[/]")


def where_to_look() -> None:
    console().print(
        "\nWatch it in the Dagster UI: [bold]make up[/] then open http://127.0.0.1:3000 —\n"
        "  Runs: every import, workflow, settlement, refund, notification and KPI run of this demo\n"
        "  (recorded in DAGSTER_HOME, default .dagster_home, the instance `make up` uses);\n"
        "  Catalog: orders_csv, daily_kpis, customer_leaderboard with their metadata and checks;\n"
        "  Automation: the sensors and schedules that do all of this with no click.\n"
        "Backlog and latest runs from the terminal: [bold]ordersys status[/]."
    )


@click.command()
@click.option("--rows", type=click.IntRange(min=1), default=20_000, show_default=True, help="Order lines to generate.")
@click.option("--refunds", "refund_count", type=click.IntRange(min=0), default=6, show_default=True,
              help="Finalized orders to refund (half in full, half partially).")
@click.option("--bad-rows", type=click.IntRange(min=0), default=25, show_default=True)
@click.option("--seed", type=int, help="Seed of the generated file (default: a new one each run).")
@click.pass_context
def demo(ctx: click.Context, rows: int, refund_count: int, bad_rows: int, seed: int | None) -> None:
    """The whole pipeline on a generated file: import, workflow and payments, refunds,
    notifications, KPIs and leaderboard, with the figures before and after."""
    # Retries come back within seconds in the demo (not after the production backoff).
    for name in ("ORDERSYS_REFUND_BACKOFF_SECONDS", "ORDERSYS_NOTIFY_BACKOFF_SECONDS"):
        os.environ.setdefault(name, "1")

    step("1. Database, Redis and the Dagster instance")
    home = instance_home.ensure()
    redis_given = bool(os.environ.get("ORDERSYS_REDIS_URL"))
    settings = runtime.load_settings(need_redis=True)
    console().print(f"database {make_url(settings.database_url).render_as_string(hide_password=True)}")
    console().print(f"redis    {settings.effective_redis_url}"
                    + ("" if redis_given else " (embedded: ORDERSYS_REDIS_URL is not set)"))
    console().print(f"runs     recorded in the Dagster instance in {home} (the one `make up` shows)")
    if settings.notify_channel == "log":
        console().print(f"customer notifications (log channel) are written to {settings.notify_log_file}")

    step("2. Catalog")
    catalog_file = DEMO_DIR / "catalog.csv"
    write_catalog(catalog_file, stock=max(1_000, rows))
    print_catalog_summary(load_catalog(get_engine(settings.database_url), catalog_file, chunk_rows=settings.chunk_rows))

    step("3. Order file")
    seed = seed if seed is not None else int(time.time())
    orders_file = DEMO_DIR / f"orders-{seed}.csv"
    generated = generate_orders(orders_file, rows=rows, seed=seed, bad_rows=min(bad_rows, rows))
    console().print(f"{orders_file}: {generated.rows:,} lines, {generated.orders:,} orders, {generated.bad_rows} bad rows")

    step("4. Import")
    print_import_summary(import_file(settings, orders_file))
    day = busiest_day(settings)

    step(f"5. Before: KPIs of {day} and the leaderboard (from Redis)")
    show_before(ctx, kpi, day=day)
    show_before(ctx, leaderboard, top=5)

    step("6. Workflow and payments: reserve stock, take payment, settle callbacks")
    # The KPIs are refreshed once, in step 8, over every day the demo's orders fall on (a year):
    # one run instead of one after each step.
    ctx.invoke(process, max_wait=30.0, quiet=False, no_analytics=True)
    print_counts(settings)

    step(f"7. Refunds ({refund_count} requested)")
    request_demo_refunds(settings, refund_count, seed)
    ctx.invoke(process, max_wait=30.0, quiet=False, no_analytics=True)

    step("8. KPIs and leaderboard materialized into Redis")
    ctx.invoke(refresh)

    step(f"9. After: KPIs of {day} and of today (refunds, notifications), top customers")
    ctx.invoke(kpi, day=day)
    ctx.invoke(kpi, day=None)
    ctx.invoke(leaderboard, top=10)
    ctx.invoke(report, limit=5, notification_type=None, status=None, order_ref=None)
    where_to_look()
