"""`order_workflow`: reserve stock for created orders, then start their payments.

Each op is a thin shell around one domain function; the run id is the claimant and is recorded
on every order event, so analytics can find what a run touched."""

# No `from __future__ import annotations`: Dagster reads the op signatures at definition time.
import time

import dagster as dg

from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.jobs.common import (
    BatchConfig,
    batch_claim,
    counts_table,
    rate_metadata,
    summary_text,
)
from ordersys_pipelines.jobs.settlement import apply_callbacks
from ordersys_pipelines.resources import DatabaseResource, PaymentGatewayResource, WorkflowSettingsResource
from ordersys_pipelines.step_retries import retry_transient

STAGE_TAGS = {"ordersys/stage": "workflow"}


@dg.op(description="Claim a batch of eligible created orders (oldest first) and reserve their stock, "
                   "all lines or none; orders that do not fit fail with the short SKUs named.",
       tags=STAGE_TAGS, out=dg.Out(dg.Nothing))
@retry_transient
def reserve_stock(
    context: dg.OpExecutionContext, config: BatchConfig, database: DatabaseResource, workflow: WorkflowSettingsResource
) -> None:
    started = time.perf_counter()
    result = reserve_batch(
        database.engine,
        **batch_claim(context, config, workflow),
    )
    seconds = time.perf_counter() - started
    context.add_output_metadata({
        "summary": summary_text({"reserved": len(result.reserved), "failed": len(result.failed)}),
        "orders_claimed": result.claimed,
        "orders_reserved": len(result.reserved),
        "orders_failed": len(result.failed),
        "failed_by_reason": counts_table(result.failed_by_reason(), "reason"),
        **rate_metadata(result.claimed, seconds, "orders"),
    })


# The reservation hands nothing over: the orders it reserved carry this run's claim in the
# database, which is all the next op (on any process or machine) needs.
@dg.op(ins={"after_reservation": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing), tags=STAGE_TAGS,
       description="Claim reserved orders and start their payments at the gateway (→ awaiting_payment).")
@retry_transient
def initiate_payments(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: DatabaseResource,
    gateway: PaymentGatewayResource,
    workflow: WorkflowSettingsResource,
) -> None:
    started = time.perf_counter()
    result = initiate_batch(
        database.engine,
        config=gateway.config,
        **batch_claim(context, config, workflow),
    )
    seconds = time.perf_counter() - started
    context.add_output_metadata({
        "summary": summary_text({"payments initiated": len(result.initiated)}),
        "payments_initiated": len(result.initiated),
        "amount_cents": result.amount_cents,
        **rate_metadata(len(result.initiated), seconds, "orders"),
    })


@dg.job(
    name="order_workflow",
    description="Reserve stock for created orders (FIFO, all-or-nothing) and send them to the payment gateway.",
    tags=STAGE_TAGS,
)
def order_workflow() -> None:
    initiate_payments(after_reservation=reserve_stock())


# The shape the Definitions hold by default (ORDERSYS_SETTLE_IN_WORKFLOW): the callbacks already
# due once the payments are started (the simulated gateway answers at once) are applied in the
# same run, so an order goes reserve → pay → settle without waiting for payment_settlement.
# apply_callbacks claims its callbacks like that job does, so both may run at once.
@dg.job(
    name="order_workflow",
    description="Reserve stock for created orders (FIFO, all-or-nothing), send them to the payment gateway "
    "and apply the callbacks already due.",
    tags=STAGE_TAGS,
)
def order_workflow_settling() -> None:
    apply_callbacks(after_payments=initiate_payments(after_reservation=reserve_stock()))
