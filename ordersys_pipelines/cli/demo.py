"""`ordersys demo`: the system on a generated file, step by step.

Each step is one function call below, so later stages (workflow, refunds, notifications, KPIs)
add their own step to the sequence.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.cli.console import console
from ordersys_pipelines.cli.imports import import_file, print_catalog_summary, print_import_summary
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import customers, order_lines, orders, products
from ordersys_pipelines.domain.imports.catalog import load_catalog
from ordersys_pipelines.domain.imports.generate import generate_orders, write_catalog
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


@click.command()
@click.option("--rows", type=click.IntRange(min=1), default=20_000, show_default=True, help="Order lines to generate.")
@click.option("--bad-rows", type=click.IntRange(min=0), default=25, show_default=True)
@click.option("--seed", type=int, help="Seed of the generated file (default: a new one each run).")
def demo(rows: int, bad_rows: int, seed: int | None) -> None:
    """Generate a catalog and an order file, import them, print what the database holds."""
    step("1. Database")
    settings = runtime.load_settings()
    console().print(f"schema up to date at {make_url(settings.database_url).render_as_string(hide_password=True)}")

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

    step("5. Counts")
    print_counts(settings)
