"""`ordersys notifications ...`: the notification history, sending what is due, re-queueing
failed ones, and the state of each channel's circuit breaker."""

from __future__ import annotations

import os
import socket
import uuid

import click
from tabulate import tabulate

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import notifications as notifications_table
from ordersys_pipelines.domain.money import for_customer
from ordersys_pipelines.domain.notifications.breaker import read_channel_states
from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending, due_summary
from ordersys_pipelines.domain.notifications.report import (
    ReportError,
    notification_report,
    report_rows,
    unfinished_count,
    validate_filters,
)
from ordersys_pipelines.domain.notifications.requeue import (
    REQUEUE_STATUSES,
    RequeueFilters,
    notification_history,
    requeue,
    requeue_candidates,
)

SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]


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
    config = NotifierConfig.from_settings(settings)
    result = dispatch_pending(engine, config, claimant=claimant, limit=batch_size)
    if result.rows():
        click.echo(tabulate(result.rows(), headers=("type", "channel", "sent", "retried", "failed"),
                            tablefmt="simple"))
    click.echo(f"sent {result.sent}, retried {result.retried}, failed {result.failed} "
               f"in {result.batches} batches ({result.seconds:.2f} s)")
    with engine.connect() as conn:
        waiting = unfinished_count(conn)
        due, _, _ = due_summary(conn, config=config)
    for breaker in result.breakers:
        if breaker.is_open:
            click.echo(f"channel {breaker.channel} is down: {breaker.reason}; {breaker.deferred} handed back untried, "
                       f"{breaker.left_pending} pending on it, next try after {_time(breaker.retry_at)} UTC")
    if waiting:
        click.echo(f"{waiting} notifications wait for a later attempt ({due} due now)")


@notifications.command()
@click.option("--type", "notification_type", help="Only this notification type.")
@click.option("--status", default="failed", show_default=True, type=click.Choice(REQUEUE_STATUSES),
              help="failed, or pending ones waiting on a backoff (made due now, attempts reset).")
@click.option("--order", "order_ref", help="Only notifications of this order reference.")
@click.option("--since", type=click.DateTime(SINCE_FORMATS), help="Only those created at or after (UTC).")
@click.option("--dry-run", is_flag=True, help="List what would be re-queued; change nothing.")
def retry(notification_type: str | None, status: str, order_ref: str | None, since, dry_run: bool) -> None:
    """Re-queue failed notifications: pending, due now, attempts back at 0, noted in their history.
    Notifications a dispatch run holds are left alone; running it twice re-queues nothing more."""
    filters = RequeueFilters(notification_type=notification_type, status=status, order_ref=order_ref, since=since)
    try:
        validate_filters(notification_type, status)
        engine = get_engine(runtime.load_settings().database_url)
        if dry_run:
            with engine.connect() as conn:
                rows = requeue_candidates(conn, filters)
        else:
            ids = requeue(engine, filters, actor=f"cli:{_user()}@{socket.gethostname()}"[:64])
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    if not dry_run:
        click.echo(f"re-queued {len(ids)} notifications" + (f": {_id_list(ids)}" if ids else ""))
        return
    if rows:
        click.echo(tabulate(
            [(row.id, row.order_ref or "-", row.type, row.status, row.attempts, _excerpt(row.last_error),
              _time(row.created_at)) for row in rows],
            headers=("id", "order", "type", "status", "attempts", "last error", "created at"),
            tablefmt="simple", disable_numparse=True,
        ))
    click.echo(f"would re-queue {len(rows)} notifications (dry run: nothing changed)")


@notifications.command()
@click.argument("notification_id", type=int)
def history(notification_id: int) -> None:
    """One notification and what happened to it besides dispatch (re-queues ...)."""
    settings = runtime.load_settings()
    with get_engine(settings.database_url).connect() as conn:
        rows = report_rows(conn, [notifications_table.c.id == notification_id])
        events = notification_history(conn, notification_id)
    if not rows:
        raise click.ClickException(f"no notification {notification_id}")
    row = rows[0]
    click.echo(tabulate(
        [("id", row.id), ("order", row.order_ref or "-"), ("type", row.type), ("status", row.status),
         ("channel", row.channel or "-"), ("attempts", row.attempts), ("last error", row.last_error or "-"),
         ("sent at", _time(row.sent_at)), ("created at", _time(row.created_at))],
        tablefmt="plain", disable_numparse=True,
    ))
    click.echo()
    click.echo(tabulate(
        [(_time(e.created_at), e.event, f"{e.from_status or '-'} → {e.to_status}", e.actor or "-", e.reason or "")
         for e in events],
        headers=("at", "event", "status", "by", "detail"), tablefmt="simple", disable_numparse=True,
    ) if events else "No events.")


@notifications.command()
def channels() -> None:
    """Each channel's circuit breaker: open (down, notifications waiting) or closed, and why."""
    settings = runtime.load_settings()
    with get_engine(settings.database_url).connect() as conn:
        states = read_channel_states(conn)
    if not states:
        click.echo("No channel has been found down.")
        return
    click.echo(tabulate(
        [(s.channel, s.state, _excerpt(s.reason), s.failures, s.left_pending, _time(s.opened_at),
          _time(s.retry_at), _time(s.updated_at)) for s in states],
        headers=("channel", "state", "why", "failures", "left pending", "opened at", "retry at", "updated at"),
        tablefmt="simple", disable_numparse=True,
    ))


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _excerpt(text: str | None, limit: int = 60) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _id_list(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" … ({len(ids) - limit} more)" if len(ids) > limit else "")


def _user() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER", "operator")
