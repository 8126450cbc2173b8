"""`payment_settlement`: apply the gateway's callbacks, then expire payments that never got one."""

# No `from __future__ import annotations`: Dagster reads the op signatures at definition time.
import time

import dagster as dg

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.domain.payments.settlement import expire_overdue, settle_batch
from ordersys_pipelines.jobs.common import (
    BatchConfig,
    batch_claim,
    batch_size,
    counts_table,
    rate_metadata,
    summary_text,
)
from ordersys_pipelines.resources import DatabaseResource, PaymentGatewayResource, WorkflowSettingsResource
from ordersys_pipelines.step_retries import retry_transient

STAGE_TAGS = {"ordersys/stage": "settlement"}


# `after_payments` orders it after initiate_payments when the workflow run settles too
# (jobs/workflow.py); payment_settlement leaves it unconnected.
@dg.op(ins={"after_payments": dg.In(dg.Nothing)}, tags=STAGE_TAGS, out=dg.Out(dg.Nothing),
       description="Verify a batch of due payment callbacks and apply them: approvals finalize (stock committed), "
                   "declines fail (stock released); an approval for a cancelled or failed order is paid "
                   "back; bad callbacks are rejected with the reason.")
@retry_transient
def apply_callbacks(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: DatabaseResource,
    gateway: PaymentGatewayResource,
    workflow: WorkflowSettingsResource,
) -> None:
    started = time.perf_counter()
    result = settle_batch(
        database.engine,
        config=gateway.config,
        **batch_claim(context, config, workflow),
    )
    seconds = time.perf_counter() - started
    context.add_output_metadata({
        "summary": summary_text({"finalized": len(result.finalized), "declined": len(result.declined),
                                 "late approvals paid back": len(result.late_approvals),
                                 "rejected": len(result.rejected), "duplicate": result.duplicates}),
        "callbacks_claimed": result.claimed,
        "callbacks_applied": result.applied,
        "orders_finalized": len(result.finalized),
        "orders_declined": len(result.declined),
        "late_approvals": len(result.late_approvals),
        "paybacks_started": result.paybacks_started,
        "callbacks_rejected": len(result.rejected),
        "rejected_by_reason": counts_table(result.rejected_by_reason(), "reason"),
        "callbacks_duplicate": result.duplicates,
        **rate_metadata(result.claimed, seconds, "callbacks"),
    })


# Expiry runs after the callbacks (an order paid just in time is finalized, not expired); the
# order only matters, nothing is handed over.
@dg.op(ins={"after_callbacks": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing), tags=STAGE_TAGS,
       description="Fail orders awaiting payment longer than ORDERSYS_PAYMENT_TIMEOUT and release their stock.")
@retry_transient
def expire_overdue_payments(
    context: dg.OpExecutionContext,
    config: BatchConfig,
    database: DatabaseResource,
    workflow: WorkflowSettingsResource,
) -> None:
    started = time.perf_counter()
    with database.engine.begin() as conn:
        expired = expire_overdue(conn, workflow.payment_timeout_seconds, run_id=context.run_id,
                                 limit=batch_size(config, workflow.batch_size), now=utcnow())
    seconds = time.perf_counter() - started
    context.add_output_metadata({
        "summary": summary_text({"expired": len(expired)}),
        "orders_expired": len(expired),
        "payment_timeout_seconds": workflow.payment_timeout_seconds,
        **rate_metadata(len(expired), seconds, "orders"),
    })


@dg.job(
    name="payment_settlement",
    description="Apply payment callbacks (finalize or roll back) and expire overdue payments.",
    tags=STAGE_TAGS,
)
def payment_settlement() -> None:
    expire_overdue_payments(after_callbacks=apply_callbacks())
