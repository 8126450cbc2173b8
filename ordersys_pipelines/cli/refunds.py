"""`ordersys refund ...` (request one) and `ordersys refunds ...` (process, show)."""

from __future__ import annotations

import time

import click
from sqlalchemy import select

from ordersys_pipelines.cli.runtime import instance, load_settings, resources
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.refunds.amounts import AmountError, parse_amount
from ordersys_pipelines.domain.refunds.processing import backlog
from ordersys_pipelines.domain.refunds.queries import refunds_table
from ordersys_pipelines.domain.refunds.requests import RefundError, RefundRefused, request_refund
from ordersys_pipelines.jobs.refunds import refund_processing

COUNTS = ("processed", "retried", "failed", "skipped")


@click.command()
@click.argument("order_ref")
@click.option("--amount", metavar="AMOUNT", help="Exact decimal amount, e.g. 12.50 (at most 2 decimals).")
@click.option("--full", is_flag=True, help="Refund everything still left on the order.")
@click.option("--reference", required=True, help="Idempotency key: repeating it returns the same refund.")
@click.option("--reason", help="Why (shown to the customer).")
def refund(order_ref: str, amount: str | None, full: bool, reference: str, reason: str | None) -> None:
    """Request a refund of ORDER_REF (processed asynchronously)."""
    if (amount is None) == (not full):
        raise click.UsageError("give either --amount AMOUNT or --full")
    try:
        cents = None if full else parse_amount(amount)
    except AmountError as exc:
        raise click.ClickException(str(exc)) from None
    settings = load_settings()
    with get_engine(settings.database_url).connect() as conn:
        try:
            result = request_refund(conn, order_ref, cents, full=full, reference=reference, reason=reason)
        except RefundRefused as exc:
            recorded = f" (recorded as rejected refund #{exc.result.refund.id})" if exc.result else ""
            raise click.ClickException(f"refund refused: {exc.reason}{recorded}") from None
        except (RefundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    r = result.refund
    prefix = "refund requested" if result.created else "existing refund returned (same reference and parameters)"
    click.echo(
        f"{prefix}: #{r.id} {r.reference} for order {r.order_ref}: {plain(r.amount_cents)} "
        f"{settings.currency} ({r.type}), {r.status}"
    )


@click.group()
def refunds() -> None:
    """Refund processing."""


@refunds.command()
@click.option("--batch-size", type=click.IntRange(min=1), help="Refunds per run (default ORDERSYS_BATCH_SIZE).")
@click.option("--wait", is_flag=True, help="Also wait for scheduled retries, until no refund is pending.")
def process(batch_size: int | None, wait: bool) -> None:
    """Run refund_processing in-process until no refund is due."""
    settings = load_settings()
    engine = get_engine(settings.database_url)
    dagster_instance, run_resources = instance(), resources(settings)
    totals = dict.fromkeys((*COUNTS, "amount_refunded_cents"), 0)
    runs = 0
    while True:
        with engine.connect() as conn:
            work = backlog(conn)
        if not work.due:
            if wait and work.waiting and work.next_due_at:
                time.sleep(min(max((work.next_due_at - utcnow()).total_seconds(), 0.2), 60))
                continue
            break
        result = refund_processing.execute_in_process(
            run_config={
                "ops": {"process_refund_batch": {"config": {"batch_size": batch_size}}},
                # The run's events are in the instance; the terminal gets one line per run.
                "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            },
            resources=run_resources,
            instance=dagster_instance,
        )
        runs += 1
        counts = _op_metadata(result, "process_refund_batch")
        for name in totals:
            totals[name] += counts.get(name, 0)
        click.echo(
            f"run {result.run_id[:8]}: " + ", ".join(f"{counts.get(n, 0)} {n}" for n in COUNTS)
            + f", {plain(counts.get('amount_refunded_cents', 0))} {settings.currency} refunded"
        )
        if not counts.get("claimed"):
            break  # another run holds what is due; it will record it
    click.echo(
        f"{runs} run(s): " + ", ".join(f"{totals[n]} {n}" for n in COUNTS)
        + f", {plain(totals['amount_refunded_cents'])} {settings.currency} refunded"
    )
    with engine.connect() as conn:
        left = backlog(conn)
    if left.waiting:
        click.echo(f"{left.waiting} refund(s) waiting for a retry, next at {left.next_due_at:%Y-%m-%d %H:%M:%S} UTC")


@refunds.command()
@click.argument("order_ref")
def show(order_ref: str) -> None:
    """List the refunds of ORDER_REF."""
    settings = load_settings()
    with get_engine(settings.database_url).connect() as conn:
        order = conn.execute(
            select(orders.c.id, orders.c.total_cents, orders.c.refund_state).where(orders.c.order_ref == order_ref)
        ).one_or_none()
        if order is None:
            raise click.ClickException(f"order {order_ref} does not exist")
        click.echo(
            f"order {order_ref}: total {plain(order.total_cents)} {settings.currency}, "
            f"refund state {order.refund_state or 'none'}"
        )
        click.echo(refunds_table(conn, order.id))


def _op_metadata(result, node: str) -> dict:
    for event in result.events_for_node(node):
        if event.event_type_value == "STEP_OUTPUT":
            return {key: value.value for key, value in event.event_specific_data.metadata.items()}
    return {}
