"""What the op-based jobs share: batch-size config and metadata helpers."""

from __future__ import annotations

import dagster as dg


class BatchConfig(dg.Config):
    """How much one run takes on; unset means ORDERSYS_BATCH_SIZE (the `workflow` resource)."""

    batch_size: int | None = None


def batch_size(config: BatchConfig, default: int) -> int:
    return config.batch_size if config.batch_size and config.batch_size > 0 else default


def rate_metadata(count: int, seconds: float, unit: str) -> dict:
    return {
        "seconds": dg.MetadataValue.float(round(seconds, 3)),
        f"{unit}_per_second": dg.MetadataValue.float(round(count / seconds, 1) if seconds > 0 else 0.0),
    }


def counts_table(counts: dict[str, int], label: str) -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("none")
    rows = "\n".join(f"| {reason} | {n} |" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return dg.MetadataValue.md(f"| {label} | count |\n| --- | ---: |\n{rows}")
