"""Batching and timing of the order workflow and payment settlement, as a Dagster resource."""

from __future__ import annotations

import dagster as dg


class WorkflowSettingsResource(dg.ConfigurableResource):
    """ORDERSYS_BATCH_SIZE, ORDERSYS_CLAIM_LEASE_SECONDS, ORDERSYS_PAYMENT_TIMEOUT and
    ORDERSYS_PARALLEL_RUNS for the workflow and settlement jobs and their sensors."""

    batch_size: int = 10_000
    claim_lease_seconds: int = 300
    payment_timeout_seconds: int = 900
    # How many runs one sensor tick may start when the backlog spans several batches.
    max_runs_per_tick: int = 4
