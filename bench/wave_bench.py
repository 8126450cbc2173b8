"""Wave benchmark: the runs one sensor tick starts for a backlog short of full batches, with
the batches as the sensor used to size them (full ones, the rest in the last run) next to the
even share it gives now (sensors/backlog.py: even_batch), alternating in the same invocation.

Each run is a process of its own doing one pass of the ops' functions (reserve_batch,
initiate_batch, settle_batch) with its batch; all start at the same instant on a fresh backlog
(bench/workflow_bench.py's database and orders). The figure is the wave's wall time until the
last run ends: the sensor starts no more runs of the stage before that.

    python bench/wave_bench.py [--orders 15000] [--runs 2] [--batch-size 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workflow_bench  # noqa: E402  (its database, backlog and gateway settings)


def one_pass(url: str, batch_size: int, start_at: float) -> float:
    """One run's pass with `batch_size`, started at `start_at`; returns when it ended."""
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.orders.reservation import reserve_batch
    from ordersys_pipelines.domain.payments.initiation import initiate_batch
    from ordersys_pipelines.domain.payments.settlement import settle_batch

    engine = get_engine(url)
    config = workflow_bench.gateway_config()
    run = "wave-" + uuid.uuid4().hex[:8]
    claim = {"batch_size": batch_size, "claimant": run, "lease_seconds": 600, "run_id": run}
    with engine.connect():
        pass  # connected before the start, as a run's process is by its first op
    time.sleep(max(0.0, start_at - time.time()))
    reserve_batch(engine, **claim)
    initiate_batch(engine, config=config, **claim)
    settle_batch(engine, config=config, **claim)
    return time.time()


def batches(orders: int, runs: int, batch_size: int) -> dict[str, list[int]]:
    from ordersys_pipelines.sensors.backlog import even_batch

    full = [max(0, min(batch_size, orders - i * batch_size)) for i in range(runs)]
    return {"full batches": full, "even share": [even_batch(orders, runs, batch_size)] * runs}


def wave(pool: ProcessPoolExecutor, orders: int, sizes: list[int]) -> float:
    from ordersys_pipelines.db import migrate
    from ordersys_pipelines.db.engine import get_engine

    with tempfile.TemporaryDirectory(prefix="ordersys-bench-") as folder:
        url = workflow_bench.create_database("postgresql", folder)
        try:
            migrate.upgrade(url)
            engine = get_engine(url)
            workflow_bench.setup(engine)
            workflow_bench.generate(engine, orders, 1)
            engine.dispose()
            start_at = time.time() + 1.0
            ends = list(pool.map(one_pass, [url] * len(sizes), sizes, [start_at] * len(sizes)))
            return max(ends) - start_at
        finally:
            workflow_bench.drop_database("postgresql", url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=15_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    variants = batches(args.orders, args.runs, args.batch_size)
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    with ProcessPoolExecutor(args.runs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in range(args.repeats):
            for label, sizes in variants.items():
                seconds[label].append(wave(pool, args.orders, sizes))
    print(f"postgresql, {args.orders:,} orders, {args.runs} runs at once, batch {args.batch_size:,}")
    for label, sizes in variants.items():
        times = ", ".join(f"{s:.2f}" for s in seconds[label])
        print(f"{label:13} {sizes}: wave {statistics.median(seconds[label]):.2f} s (median of {times})")
    before, now = (statistics.median(v) for v in seconds.values())
    print(f"even share / full batches: {before / now:.2f}x faster")


if __name__ == "__main__":
    main()
