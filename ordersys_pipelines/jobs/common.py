"""What the op-based jobs share: batch-size config and metadata helpers.

Ops hand nothing to each other (`dg.Nothing` outputs and inputs only order them): what the next
op needs is in the database, and what a person wants to read is in the output metadata. So a
step can run in any process or on any machine (the Celery executor) and no IO manager stores
anything."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.domain.tables import markdown_table
from ordersys_pipelines.resources.workflow import WorkflowSettingsResource


class BatchConfig(dg.Config):
    """How much one run takes on; unset means ORDERSYS_BATCH_SIZE (the `workflow` resource)."""

    batch_size: int | None = None


def batch_size(config: BatchConfig, default: int) -> int:
    return config.batch_size if config.batch_size and config.batch_size > 0 else default


def batch_claim(context: dg.OpExecutionContext, config: BatchConfig, workflow: WorkflowSettingsResource) -> dict:
    """How a batch op claims its work: the batch size, and the run id as claimant and as the
    events' run id, so a retried attempt of the same run finds the claims it left."""
    return {"batch_size": batch_size(config, workflow.batch_size), "claimant": context.run_id,
            "lease_seconds": workflow.claim_lease_seconds, "run_id": context.run_id}


def rate_metadata(count: int, seconds: float, unit: str) -> dict:
    return {
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        f"{unit}_per_second": dg.MetadataValue.float(round(count / seconds, 1) if seconds > 0 else 0.0),
    }


def counts_table(counts: dict[str, int], label: str) -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("none")
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    return dg.MetadataValue.md(markdown_table([label, "count"], rows, numeric=["count"]))


SUMMARY_KEY = "summary"


def summary_text(counts: dict[str, int]) -> str:
    """The op's headline counts ("reserved 3, failed 2"), shown by `ordersys process`."""
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())


def step_output_metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    """The output metadata an op reported, as plain values."""
    for event in result.events_for_node(node):
        if event.event_type_value == "STEP_OUTPUT":
            return {key: value.value for key, value in event.event_specific_data.metadata.items()}
    return {}
