"""How a sensor splits a backlog into parallel batch runs.

Every stage claims its work row by row (`FOR UPDATE SKIP LOCKED` with a lease), so several runs
of one job never take the same item; a large backlog therefore becomes several runs at once,
one per batch, up to the configured parallelism (ORDERSYS_PARALLEL_RUNS). What is left waits
for the next tick; the run queue's tag limits decide how many of the runs execute together.
"""

from __future__ import annotations

import math


def parallel_runs(pending: int, per_run: int, parallelism: int) -> int:
    """Runs to start for `pending` items when one run takes `per_run`: one per batch, at most
    `parallelism`, none for an empty backlog."""
    if pending <= 0:
        return 0
    return min(math.ceil(pending / max(per_run, 1)), max(parallelism, 1))


def share(total: int, parts: int) -> int:
    """Each of `parts` runs' share of `total` batches (rounded up, so none is left over)."""
    return math.ceil(total / max(parts, 1))
