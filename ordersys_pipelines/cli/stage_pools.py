"""Each stage's concurrency pool gets the limit dagster.yaml gives the stage's run tag.

Pool limits live in the instance's storage, not in dagster.yaml (which sets only the pools'
`granularity` and `default_limit`), so `make up` runs this once the instance exists:

    DAGSTER_HOME=... python -m ordersys_pipelines.cli.stage_pools

One number per stage, then: the `ordersys/stage` limit in dagster.yaml. A pool whose stage has
no tag limit keeps the default limit (1), the safe side.
"""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.assets.stages import STAGE_POOLS, STAGE_TAG


def stage_tag_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """The `ordersys/stage` tag limits of the instance's run queue, by stage."""
    queue = instance.get_concurrency_config().run_queue_config
    limits = queue.tag_concurrency_limits if queue else []
    return {
        limit["value"]: int(limit["limit"])
        for limit in limits
        if limit.get("key") == STAGE_TAG and isinstance(limit.get("value"), str)
    }


def apply_stage_pools(instance: dg.DagsterInstance) -> dict[str, int]:
    """Sets every stage pool that has a tag limit to that limit; returns what was set."""
    limits = stage_tag_limits(instance)
    applied = {pool: limits[pool] for pool in STAGE_POOLS if pool in limits}
    for pool, limit in applied.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return applied


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        applied = apply_stage_pools(instance)
    print("stage pools: " + (", ".join(f"{pool}={limit}" for pool, limit in applied.items()) or "none set"))


if __name__ == "__main__":
    main()
