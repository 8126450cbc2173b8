"""`notification_dispatch`: send due customer notifications in batches (one op, thin shell)."""

import dagster as dg

from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending
from ordersys_pipelines.domain.tables import markdown_table
from ordersys_pipelines.jobs.common import SUMMARY_KEY
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.step_retries import retry_transient

STAGE_TAGS = {"ordersys/stage": "notifications"}


class DispatchConfig(dg.Config):
    batch_size: int | None = None  # default: ORDERSYS_NOTIFY_BATCH_SIZE
    max_batches: int = 50  # bounds one run; the sensor starts another for what is left


@dg.op(
    description="Claim due notifications in batches, render them, send them through their channel "
    "and record sent / retried / failed per type and channel; a channel that is down is left alone "
    "for the rest of the run (circuit breaker) and its notifications stay pending.",
    tags={"dagster/kind/python": ""},
    out=dg.Out(dg.Nothing),
)
@retry_transient
def dispatch_notifications(
    context: dg.OpExecutionContext, config: DispatchConfig, database: DatabaseResource, notifier: NotifierResource
):
    result = dispatch_pending(
        database.engine, notifier.config, claimant=f"dispatch:{context.run_id}",
        max_batches=config.max_batches, limit=config.batch_size,
    )
    if result.failed:
        context.log.warning(f"{result.failed} notifications failed; e.g. {result.errors[:3]}")
    rate = round(result.claimed / result.seconds, 1) if result.seconds else 0.0
    metadata = {
        SUMMARY_KEY: f"sent {result.sent:,}, retried {result.retried:,}, failed {result.failed:,}, "
                     f"handed back {sum(result.deferred.values()):,} ({rate:,.0f}/s)",
        "claimed": result.claimed,
        "sent": result.sent,
        "retried": result.retried,
        "failed": result.failed,
        "lost_claims": result.lost,
        "deferred": sum(result.deferred.values()),
        "channels_open": ", ".join(b.channel for b in result.breakers if b.is_open) or "none",
        "batches": result.batches,
        "seconds": round(result.seconds, 3),
        "notifications_per_second": rate,
        "by_type_and_channel": dg.MetadataValue.md(result.markdown()),
    }
    if result.breakers:
        metadata["channel_breakers"] = dg.MetadataValue.md(result.breakers_markdown())
        for breaker in result.breakers:
            if breaker.is_open:
                context.log.warning(f"channel {breaker.channel} is down ({breaker.reason}); "
                                    f"{breaker.left_pending} notifications left pending")
    if result.errors:
        metadata["errors"] = dg.MetadataValue.md(markdown_table(["id", "outcome", "error"], result.errors, numeric=["id"]))
    return dg.Output(None, metadata=metadata)


@dg.job(
    description="Send pending customer notifications through the configured channels, with retries "
    "and exponential backoff; started by `notification_dispatch_sensor` when some are due.",
    tags=STAGE_TAGS,
)
def notification_dispatch():
    dispatch_notifications()
