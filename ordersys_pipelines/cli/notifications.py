"""`ordersys notifications ...`: the notification history, and sending what is due."""

from __future__ import annotations

import os
import socket
import uuid

import click
from tabulate import tabulate

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.money import for_customer
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending, due_summary
from ordersys_pipelines.domain.notifications.report import (
    ReportError,
    notification_report,
    unfinished_count,
    validate_filters,
)


@click.group()
def notifications() -> None:
    """Customer notifications: history and dispatch."""


@notifications.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Rows shown (newest first).")
@click.option("--type", "notification_type", help="Only this notification type.")
@click.option("--status", help="Only this status (pending, sending, sent, failed).")
@click.option("--order", "order_ref", help="Only notifications of this order reference.")
def report(limit: int, notification_type: str | None, status: str | None, order_ref: str | None) -> None:
    """What was sent, what failed and what is pending, with a summary."""
    try:
        validate_filters(notification_type, status)  # before touching the database
        settings = runtime.load_settings()
        with get_engine(settings.database_url).connect() as conn:
            rows, summary = notification_report(
                conn, limit=limit, notification_type=notification_type, status=status, order_ref=order_ref
            )
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    table = [
        (row.id, row.order_ref or "-", row.type, row.status, row.channel or "-",
         for_customer(row.total_cents, settings.currency) if row.total_cents is not None else "-",
         _time(row.sent_at), _time(row.created_at))
        for row in rows
    ]
    headers = ("id", "order", "type", "status", "channel", "total", "sent at", "created at")
    click.echo(tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True) if rows
               else "No notifications match.")
    rate = summary.success_rate
    click.echo()
    click.echo(tabulate(
        [("total", summary.total), ("sent", summary["sent"]), ("failed", summary["failed"]),
         ("pending", summary["pending"] + summary["sending"]),
         ("success rate", "-" if rate is None else f"{rate:.1%}")],
        tablefmt="plain", disable_numparse=True,
    ))
    if len(rows) < summary.total:
        click.echo(f"(showing the newest {len(rows)} of {summary.total})")


@notifications.command()
@click.option("--batch-size", type=click.IntRange(min=1), help="Notifications per batch (default: setting).")
def send(batch_size: int | None) -> None:
    """Send every due notification now, in this process, until nothing is due."""
    settings = runtime.load_settings()
    engine = get_engine(settings.database_url)
    claimant = f"cli:{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # fits claimed_by
    result = dispatch_pending(engine, NotifierConfig.from_settings(settings), claimant=claimant, limit=batch_size)
    if result.rows():
        click.echo(tabulate(result.rows(), headers=("type", "channel", "sent", "retried", "failed"),
                            tablefmt="simple"))
    click.echo(f"sent {result.sent}, retried {result.retried}, failed {result.failed} "
               f"in {result.batches} batches ({result.seconds:.2f} s)")
    with engine.connect() as conn:
        waiting = unfinished_count(conn)
        due, _, _ = due_summary(conn)
    if waiting:
        click.echo(f"{waiting} notifications wait for a later attempt ({due} due now)")


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"
