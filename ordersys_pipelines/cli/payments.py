"""`ordersys payments ...` (callbacks into the inbox, reconciliation) and `ordersys webhook serve`."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from ordersys_pipelines.cli import runtime
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.payments.callbacks import MAX_BODY_BYTES, SIGNATURE_HEADER, deliver, receive
from ordersys_pipelines.domain.payments.paybacks import pay_back_unreturned
from ordersys_pipelines.domain.payments.reconciliation import DEFAULT_LIMIT, reconcile
from ordersys_pipelines.domain.payments.signing import sign
from ordersys_pipelines.resources import PaymentGatewayResource


def _gateway_config(settings):
    return runtime.resource(settings, "gateway").config


@click.group()
def payments() -> None:
    """Payment callbacks."""


@payments.command()
@click.option("--file", "file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The raw callback event body (JSON), byte for byte as the gateway sent it.")
@click.option("--signature", help=f"The {SIGNATURE_HEADER} header that came with the event (t=..,v1=..).")
@click.option("--sign", "sign_it", is_flag=True,
              help="Sign the file with the shared secret (ORDERSYS_GATEWAY_SECRET) now, for an event an operator "
                   "wrote or fixed by hand; the secret holder vouches for it.")
def callback(file: Path, signature: str | None, sign_it: bool) -> None:
    """Put one gateway callback event into the inbox (verified like a webhook delivery).

    Settlement applies it on its next run. A bad signature, a stale timestamp, a file over
    64 KB or a malformed event is recorded as rejected and reported (exit status 1)."""
    if bool(signature) == sign_it:
        raise click.ClickException("give exactly one of --signature HEADER or --sign")
    settings = runtime.load_settings()
    config = _gateway_config(settings)
    with file.open("rb") as stream:
        raw = stream.read(MAX_BODY_BYTES + 1)  # one byte more than allowed is enough to refuse it
    header = sign(raw, config.secret) if sign_it else signature
    receipt = deliver(get_engine(settings.database_url),
                      partial(receive, raw_payload=raw, signature_header=header, source="cli", config=config), config)
    if receipt.outcome == "rejected":
        raise click.ClickException(f"callback rejected: {receipt.reason} (stored as {receipt.event_id})")
    click.echo(f"{receipt.outcome}: {receipt.event_id}")


@payments.command("reconcile")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=click.IntRange(min=1),
              help="Most discrepancies listed (all are counted).")
@click.option("--pay-back", is_flag=True,
              help="First start a payback for every approval of a cancelled or failed order that has none "
                   "(late approvals settled before they were paid back automatically).")
def reconcile_command(limit: int, pay_back: bool) -> None:
    """Check that every payment the gateway approved belongs to a paid order (or one still being
    settled) or has been paid back in full; list those that do not (exit status 1)."""
    settings = runtime.load_settings()
    engine = get_engine(settings.database_url)
    if pay_back:
        with engine.begin() as conn:
            started = pay_back_unreturned(conn)
        click.echo(f"paybacks started: {len(started)} (refund_processing pays them out)")
    with engine.connect() as conn:
        result = reconcile(conn, limit=limit)
    if result.clean:
        click.echo(f"reconciled: {result.approved_payments} approved payment(s), no discrepancies")
        return
    click.echo(result.table())
    shown = "" if len(result.discrepancies) == result.discrepancy_count else f" (first {limit} listed)"
    raise click.ClickException(
        f"{result.discrepancy_count} discrepanc{'y' if result.discrepancy_count == 1 else 'ies'} among "
        f"{result.approved_payments} approved payment(s){shown}"
    )


@click.group()
def webhook() -> None:
    """The HTTP endpoint the payment gateway calls."""


@webhook.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (local only by default).")
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--limit-concurrency", default=64, show_default=True, type=click.IntRange(min=1),
              help="Connections served at once; more are answered 503 (each holds at most 64 KB of body).")
@click.option("--body-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a callback body may take to arrive in full; a slower one is refused (408).")
def serve(host: str, port: int, limit_concurrency: int, body_timeout: float) -> None:
    """Serve POST /payments/callback: verify the signature, store the event in the inbox."""
    import uvicorn

    from ordersys_pipelines.webhook.app import create_app

    settings = runtime.load_settings()
    gateway: PaymentGatewayResource = runtime.resource(settings, "gateway")
    click.echo(f"payment callbacks: POST http://{host}:{port}/payments/callback")
    app = create_app(get_engine(settings.database_url), gateway.config, body_timeout_seconds=body_timeout)
    uvicorn.run(app, host=host, port=port,
                log_level="info", limit_concurrency=limit_concurrency)
