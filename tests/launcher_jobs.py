"""Jobs for tests/test_run_launcher.py, loaded by a run's own process from this file; their steps
run in that process."""

import os
import sys
import time
from pathlib import Path

import dagster as dg

# Read when a run's process imports this file: a prewarmed process has orjson loaded already (a
# fork-server preload; Dagster itself never imports it), a cold one has not.
ORJSON_PRELOADED = "orjson" in sys.modules


@dg.op
def report_process(context: dg.OpExecutionContext) -> None:
    probe = os.environ.get("LAUNCHER_TEST_PROBE")
    context.log.info(f"process pid={os.getpid()} probe={probe} orjson_preloaded={ORJSON_PRELOADED}")


@dg.op
def wait_for_release(context: dg.OpExecutionContext) -> None:
    """Runs until the file the run's tag names appears (or a minute passes, or the seconds of
    the tag `wait_seconds`)."""
    release = Path(context.run.tags["release"])
    Path(f"{release}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + float(context.run.tags.get("wait_seconds", 60))
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@dg.job(executor_def=dg.in_process_executor)
def quick():
    report_process()


@dg.job(executor_def=dg.in_process_executor)
def waiting():
    wait_for_release()


defs = dg.Definitions(jobs=[quick, waiting])
