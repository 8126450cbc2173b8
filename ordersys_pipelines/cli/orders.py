"""`ordersys orders ...`: look at one order; cancel, ship or deliver many."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from rich.table import Table
from sqlalchemy import Connection

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.cli.console import console
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.isolation import describe, is_data_error
from ordersys_pipelines.domain.orders import operations
from ordersys_pipelines.domain.orders.queries import OrderDetails, order_details
from ordersys_pipelines.domain.refunds.queries import refunds_table


def money(cents: int | None, currency: str) -> str:
    if cents is None:
        return ""
    if not isinstance(cents, int):  # read as the stored text: not a number of cents
        return f"{cents} (not a valid amount)"
    return f"{cents // 100:,}.{cents % 100:02d} {currency}"


def when(moment, pattern: str) -> str:
    """A stored timestamp; one the database holds out of range is shown as its text."""
    if moment is None:
        return ""
    if isinstance(moment, datetime):
        return f"{moment:{pattern}}"
    return f"{moment} (not a valid date)"


def _summary(conn: Connection, details: OrderDetails, currency: str) -> Table:
    order = details.order
    table = Table(title=f"Order {order.order_ref}", show_header=False, title_justify="left")
    for name, value in [
        ("status", order.status + (f" — {order.status_reason}" if order.status_reason else "")),
        ("customer", f"{order.customer} ({order.customer_name})" if order.customer_name else order.customer),
        ("order date", when(order.order_date, "%Y-%m-%d %H:%M UTC")),
        ("total", money(order.total_cents, currency)),
        ("payment", order.payment_ref or "—"),
        ("refund state", order.refund_state or "—"),
        ("import file", order.import_file or "—"),
    ]:
        table.add_row(name, str(value))
    return table


def _lines(conn: Connection, details: OrderDetails, currency: str) -> Table:
    table = Table(title="Lines", title_justify="left")
    for column in ("#", "SKU", "product", "qty", "unit price", "amount"):
        table.add_column(column, justify="right" if column in ("#", "qty", "unit price", "amount") else "left")
    for line in details.lines:
        table.add_row(str(line.line_no), line.sku, line.name, str(line.quantity),
                      money(line.unit_price_cents, currency), money(line.amount_cents, currency))
    return table


def _events(conn: Connection, details: OrderDetails, currency: str) -> Table:
    table = Table(title="Audit trail", title_justify="left")
    for column in ("time (UTC)", "from", "to"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason")
    table.add_column("run", no_wrap=True)
    for event in details.events:
        table.add_row(when(event.created_at, "%Y-%m-%d %H:%M:%S"), event.from_status or "", event.to_status,
                      event.reason or "", (event.run_id or "")[:8])
    return table


# What `orders show` prints, in order. Another area adds its section here (refunds append a
# table of the order's refunds): a function (conn, details, currency) → a renderable or None.
def _refunds(conn: Connection, details: OrderDetails, currency: str) -> str:
    return "Refunds\n" + refunds_table(conn, details.order.id)


SHOW_SECTIONS: list[Callable[[Connection, OrderDetails, str], object | None]] = [
    _summary, _lines, _events, _refunds,
]


@click.group()
def orders() -> None:
    """Orders: show one, or cancel / ship / deliver many."""


@orders.command()
@click.argument("ref")
def show(ref: str) -> None:
    """Show order REF: its state, lines and audit trail of every transition."""
    settings = runtime.load_settings()
    with get_engine(settings.database_url).connect() as conn:
        details = order_details(conn, ref)
        if details is None:
            raise click.ClickException(f"no order {ref!r}")
        for section in SHOW_SECTIONS:
            try:
                with conn.begin_nested():
                    renderable = section(conn, details, settings.currency)
            except Exception as error:  # noqa: BLE001 - one unreadable section hides no other
                if not is_data_error(error):
                    raise
                renderable = f"({section.__name__.strip('_')} could not be read: {describe(error)})"
            if renderable is not None:
                console().print(renderable)


def _refs(refs: tuple[str, ...], file: Path | None) -> list[str]:
    wanted = list(refs)
    if file is not None:
        wanted += [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not wanted:
        raise click.ClickException("no order refs given (arguments or --file)")
    return wanted


def _bulk(action: str, refs: tuple[str, ...], file: Path | None, **kwargs) -> None:
    settings = runtime.load_settings()
    with get_engine(settings.database_url).begin() as conn:
        outcome = getattr(operations, action)(conn, _refs(refs, file), **kwargs)
    past = {"cancel": "cancelled", "ship": "shipped", "deliver": "delivered"}[action]
    click.echo(f"{past}: {len(outcome.changed)}" + (f" ({', '.join(outcome.changed[:20])}"
                                                   f"{' …' if len(outcome.changed) > 20 else ''})" if outcome.changed else ""))
    for refusal in outcome.refused:
        click.echo(f"refused: {refusal}", err=True)
    for ref in outcome.unknown:
        click.echo(f"unknown: order {ref} does not exist", err=True)
    problems = len(outcome.refused) + len(outcome.unknown)
    if problems:
        raise click.ClickException(f"{problems} order(s) not {past}")


_file_option = click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                            help="A file of order refs, one per line ('#' starts a comment).")


@orders.command()
@click.argument("refs", nargs=-1)
@_file_option
@click.option("--reason", default="cancelled by operator", show_default=True, help="Told to the customer.")
def cancel(refs: tuple[str, ...], file: Path | None, reason: str) -> None:
    """Cancel orders not yet finalized; their reserved stock is released."""
    _bulk("cancel", refs, file, reason=reason)


@orders.command()
@click.argument("refs", nargs=-1)
@_file_option
def ship(refs: tuple[str, ...], file: Path | None) -> None:
    """Mark finalized orders shipped."""
    _bulk("ship", refs, file)


@orders.command()
@click.argument("refs", nargs=-1)
@_file_option
def deliver(refs: tuple[str, ...], file: Path | None) -> None:
    """Mark shipped orders delivered."""
    _bulk("deliver", refs, file)
