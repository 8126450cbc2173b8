"""Stage limits for runs of assets, whoever launched them.

The instance limits each stage's runs by the `ordersys/stage` run tag (dagster.yaml), and the
jobs and sensors set that tag. A run launched from the catalog (a materialization or a backfill,
job `__ASSET_JOB`) carries no tag of ours, so the stage assets also name a concurrency pool: with
`concurrency.pools.granularity: run` the run queue counts every run that contains a step of the
pool, launched by whoever. The pool is named after the stage; its limit is the stage's tag limit,
set in the instance by `ordersys_pipelines.cli.stage_pools` (`make up` runs it).
"""

from __future__ import annotations

import dagster as dg

STAGE_TAG = "ordersys/stage"
IMPORT_POOL = "import"
ANALYTICS_POOL = "analytics"
STAGE_POOLS = (IMPORT_POOL, ANALYTICS_POOL)


def tag_run_with_stage(context: dg.AssetExecutionContext, stage: str, **more: str) -> None:
    """The stage tag (and any further tags) on the running run, so the stage filter of the UI and
    `ordersys status` find a catalog-launched run too once it runs; the pool limited it before."""
    wanted = {STAGE_TAG: stage, **more}
    if any(context.run.tags.get(key) != value for key, value in wanted.items()):
        context.instance.add_run_tags(context.run.run_id, wanted)
