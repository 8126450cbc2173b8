"""Refund jobs: `refund_processing` (one batch of due refunds through the gateway) and
`refund_request` (an operator's request, launched from the Launchpad with run config)."""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
import dagster as dg
from pydantic import Field

from ordersys_pipelines.domain.money import plain
from ordersys_pipelines.domain.refunds.amounts import AmountError, parse_amount
from ordersys_pipelines.domain.refunds.processing import RefundPolicy, process_batch
from ordersys_pipelines.domain.refunds.requests import RefundError, RefundRefused, request_refund
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.payment_gateway import PaymentGatewayResource
from ordersys_pipelines.settings import get_settings
from ordersys_pipelines.step_retries import retry_transient

STAGE_TAGS = {"ordersys/stage": "refunds"}


class RefundProcessingConfig(dg.Config):
    batch_size: int | None = Field(
        default=None, description="Most refunds this run claims (default: ORDERSYS_BATCH_SIZE)."
    )


@dg.op(
    description="Claim due refunds, send them to the gateway by reference, record processed / "
    "retried / failed / skipped with an event each and the notifications.",
    out=dg.Out(dg.Nothing),
    tags=STAGE_TAGS,
)
@retry_transient
def process_refund_batch(
    context: dg.OpExecutionContext,
    config: RefundProcessingConfig,
    database: DatabaseResource,
    gateway: PaymentGatewayResource,
) -> None:
    settings = get_settings()
    policy = RefundPolicy(
        max_attempts=settings.refund_max_attempts,
        backoff_seconds=settings.refund_backoff_seconds,
        lease_seconds=settings.claim_lease_seconds,
    )
    report = process_batch(
        database.engine, gateway.config, limit=config.batch_size or settings.batch_size, policy=policy,
        run_id=context.run_id,
    )
    context.log.info(
        f"refunds: {report.processed} processed ({plain(report.amount_refunded_cents)}), "
        f"{report.retried} to retry, {report.failed} failed, {report.skipped} skipped in {report.seconds:.3f} s"
    )
    context.add_output_metadata(report.as_metadata())


@dg.job(
    name="refund_processing",
    description="One batch of due refunds through the payment gateway (started by "
    "refund_processing_sensor, or `ordersys refunds process`).",
    tags=STAGE_TAGS,
)
def refund_processing() -> None:
    process_refund_batch()


class RefundRequestConfig(dg.Config):
    order_ref: str = Field(description="The order to refund.")
    reference: str = Field(description="Idempotency key: the same key and parameters are the same refund.")
    amount: str | None = Field(
        default=None, description="Amount as an exact decimal string, e.g. '12.50' (or set full: true)."
    )
    full: bool = Field(default=False, description="Refund everything still left on the order.")
    reason: str | None = Field(default=None, description="Why (shown to the customer).")


@dg.op(
    description="Validate and record one refund request (pending), or return the one with this reference.",
    out=dg.Out(dg.Nothing),
    tags=STAGE_TAGS,
)
@retry_transient
def request_refund_op(context: dg.OpExecutionContext, config: RefundRequestConfig, database: DatabaseResource) -> None:
    if config.full == (config.amount is not None):
        raise dg.Failure("give either amount (e.g. '12.50') or full: true", allow_retries=False)
    try:
        cents = None if config.full else parse_amount(config.amount)
    except AmountError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    try:
        with database.engine.connect() as conn:
            result = request_refund(
                conn, config.order_ref, cents, full=config.full, reference=config.reference,
                reason=config.reason, run_id=context.run_id,
            )
    except RefundRefused as exc:
        raise dg.Failure(
            f"refund refused: {exc.reason}",
            metadata={"reference": config.reference, "order_ref": config.order_ref, "recorded": exc.result is not None},
            allow_retries=False,
        ) from None
    except (RefundError, ValueError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    refund = result.refund
    context.log.info(
        f"refund {refund.reference} of order {refund.order_ref}: {plain(refund.amount_cents)} "
        f"({refund.type}), {refund.status}" + ("" if result.created else " (existing request returned)")
    )
    context.add_output_metadata({
        "refund_id": refund.id,
        "reference": refund.reference,
        "order_ref": refund.order_ref,
        "amount_cents": refund.amount_cents,
        "amount": plain(refund.amount_cents),
        "type": refund.type,
        "status": refund.status,
        "created": result.created,
    })


@dg.job(
    name="refund_request",
    description="Request a refund (Launchpad: order_ref, reference, amount or full, reason). Refused "
    "requests are recorded as rejected and fail the run with the reason.",
    tags=STAGE_TAGS,
)
def refund_request() -> None:
    request_refund_op()
