"""What the backlog sensors share: is a run of the job already in flight, how a backlog is split
into parallel batch runs, and the one run-key rule of every backlog sensor (workflow,
settlement, refunds, notifications): `watermark_requests`.

Every stage claims its work row by row (`FOR UPDATE SKIP LOCKED` with a lease), so several runs
of one job never take the same item; a large backlog therefore becomes several runs at once,
one per batch, up to the configured parallelism (ORDERSYS_PARALLEL_RUNS), with the backlog
shared evenly when it is short of that many full batches. What is left waits for the next
tick; the run queue's tag limits decide how many of the runs execute together.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_in_flight(instance: dg.DagsterInstance, job_name: str, within_seconds: float | None = None) -> str | None:
    """The id of a queued or running run of the job, if there is one (created in the last
    `within_seconds`, when given)."""
    created_after = None if within_seconds is None else datetime.now(UTC) - timedelta(seconds=within_seconds)
    run_ids = instance.get_run_ids(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, created_after=created_after), limit=1)
    return run_ids[0] if run_ids else None


def parallel_runs(pending: int, per_run: int, parallelism: int) -> int:
    """Runs to start for `pending` items when one run takes `per_run`: one per batch, at most
    `parallelism`, none for an empty backlog."""
    if pending <= 0:
        return 0
    return min(math.ceil(pending / max(per_run, 1)), max(parallelism, 1))


def even_batch(pending: int, runs: int, per_run: int, *, capped: bool = False) -> int:
    """The batch of each of `runs` runs started together for `pending` items: `per_run`, or an
    even share when the backlog is short of `runs` full batches. 15,000 orders in batches of
    10,000 make two runs of 7,500 that end together, not one of 10,000 that the other run's
    5,000 leaves working alone (the sensor waits for the last before it starts more). A
    `capped` count is a lower bound of the backlog, so it is not shared."""
    if runs <= 1 or capped:
        return per_run
    return max(1, min(per_run, math.ceil(pending / runs)))


def batch_run_config(job: dg.JobDefinition, size: int, ops: frozenset[str] | None = None) -> dict:
    """Run config giving the ops of `job` (each takes a BatchConfig) the batch `size`: all of
    them, or those named in `ops`."""
    return {"ops": {node.name: {"config": {"batch_size": size}}
                    for node in job.graph.nodes if ops is None or node.name in ops}}


def share(total: int, parts: int) -> int:
    """Each of `parts` runs' share of `total` batches (rounded up, so none is left over)."""
    return math.ceil(total / max(parts, 1))


def batch_run_requests(run_key: str, runs: int, **request) -> list[dg.RunRequest]:
    """`runs` identical batch runs: the first under `run_key`, the others under `run_key:i`, so
    a tick with one batch keeps the key it always had."""
    return [dg.RunRequest(run_key=run_key if i == 0 else f"{run_key}:{i}", **request) for i in range(runs)]


def watermark_requests(
    context: dg.SensorEvaluationContext,
    *,
    job_name: str,
    key_prefix: str,
    watermark: int | str,
    lease_seconds: float,
    runs: int,
    already: str,
    **request,
) -> dg.SensorResult | dg.SkipReason:
    """The run-key rule of a backlog sensor whose due work has a watermark (a value that changes
    whenever the due work does):

    - while a run of the job is queued or in progress, nothing is requested (it, or the next
      tick, takes the rest);
    - the same watermark already requested less than a lease ago is not requested again;
    - otherwise `runs` batch runs under `{key_prefix}:{watermark}:{repeat}` (`:i` for the
      further batches), `repeat` counting how often the same watermark was requested after a
      lease (a run that died before claiming anything). Without a cursor the key is the one of
      the first request, so Dagster's run-key check still launches nothing twice.

    `already` is the skip message for work that was already requested."""
    in_flight = run_in_flight(context.instance, job_name)
    if in_flight:
        return dg.SkipReason(f"{job_name} run {in_flight} is in flight")
    previous = json.loads(context.cursor) if context.cursor else {}
    if not isinstance(previous, dict):  # a cursor of the earlier tick-counter rule
        previous = {}
    now = time.time()
    repeat = 0
    if previous.get("watermark") == watermark:
        if now - previous.get("requested_at", 0) < lease_seconds:
            return dg.SkipReason(f"{already} (watermark {watermark})")
        repeat = previous.get("repeat", 0) + 1
    run_key = f"{key_prefix}:{watermark}:{repeat}"
    cursor = {"watermark": watermark, "requested_at": now, "repeat": repeat, "run_key": run_key}
    return dg.SensorResult(run_requests=batch_run_requests(run_key, runs, **request), cursor=json.dumps(cursor))
