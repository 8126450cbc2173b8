"""`order_workflow`: reserve stock for created orders, then start their payments.

Each op is a thin shell around one domain function; the run id is the claimant and is recorded
on every order event, so analytics can find what a run touched."""

# No `from __future__ import annotations`: Dagster reads the op signatures at definition time.
import time

import dagster as dg

from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.jobs.common import BatchConfig, batch_size, counts_table, rate_metadata
from ordersys_pipelines.resources import DatabaseResource, PaymentGatewayResource, WorkflowSettingsResource

STAGE_TAGS = {"ordersys/stage": "workflow"}


@dg.op(description="Claim a batch of eligible created orders (oldest first) and reserve their stock, "
                   "all lines or none; orders that do not fit fail with the short SKUs named.",
       tags=STAGE_TAGS)
def reserve_stock(
    context: dg.OpExecutionContext, config: BatchConfig, database: DatabaseResource, workflow: WorkflowSettingsResource
) -> dict:
    started = time.perf_counter()
    result = reserve_batch(
        database.engine,
        batch_size=batch_size(config, workflow.batch_size),
        claimant=context.run_id,
        lease_seconds=workflow.claim_lease_seconds,
        run_id=context.run_id,
    )
    seconds = time.perf_counter() - started
    summary = {"reserved": len(result.reserved), "failed": len(result.failed)}
    context.add_output_metadata({
        "orders_claimed": result.claimed,
        "orders_reserved": summary["reserved"],
        "orders_failed": summary["failed"],
        "failed_by_reason": counts_table(result.failed_by_reason(), "reason"),
        **rate_metadata(result.claimed, seconds, "orders"),
    })
    return summary


@dg.op(ins={"reservation": dg.In(dict)}, tags=STAGE_TAGS,
       description="Claim reserved orders and start their payments at the gateway (→ awaiting_payment).")
def initiate_payments(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    reservation: dict,
    database: DatabaseResource,
    gateway: PaymentGatewayResource,
    workflow: WorkflowSettingsResource,
) -> dict:
    started = time.perf_counter()
    result = initiate_batch(
        database.engine,
        config=gateway.config,
        batch_size=batch_size(config, workflow.batch_size),
        claimant=context.run_id,
        lease_seconds=workflow.claim_lease_seconds,
        run_id=context.run_id,
    )
    seconds = time.perf_counter() - started
    context.add_output_metadata({
        "payments_initiated": len(result.initiated),
        "amount_cents": result.amount_cents,
        **rate_metadata(len(result.initiated), seconds, "orders"),
    })
    return {**reservation, "payments initiated": len(result.initiated)}


@dg.job(
    name="order_workflow",
    description="Reserve stock for created orders (FIFO, all-or-nothing) and send them to the payment gateway.",
    tags=STAGE_TAGS,
)
def order_workflow() -> None:
    initiate_payments(reserve_stock())
