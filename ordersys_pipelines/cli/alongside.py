"""`ordersys process`: a stage run in a second process alongside the others.

The workflow leaves the database busy and this process waiting on it about half of its time;
rendering and sending notifications is the opposite. So with a backlog of more than one
workflow batch, the notifications of one round are sent while the next round's workflow runs,
in a process of its own (Dagster's in-process runs set up their loggers per run, which two
threads of one process cannot do at once). The child polls for due work, ends once the parent
has finished its stages and nothing is due, or when the parent is gone (killed), and reports
each run back through a queue, so the parent prints it and counts it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import sys
import time
from dataclasses import dataclass

POLL_SECONDS = 0.2
# What the parent asks through the shared byte: go on, stop once nothing is due, stop now.
GO_ON, STOP, ABORT = 0, 1, 2


@dataclass(frozen=True)
class Finished:
    job_name: str
    run_id: str
    line: str  # the progress line, as the parent prints its own
    success: bool


def follow(stage_name: str, stop, reports, parent_pid: int) -> None:
    """The child: run `stage_name` whenever it has work, until told to stop with none left.
    `stop` is a bare shared byte, not an Event: a child killed while waiting on an Event's
    condition would leave the parent's set() waiting for it forever."""
    try:
        _follow(stage_name, stop, reports, parent_pid)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reports it
        reports.cancel_join_thread()
        sys.exit(130)


def _follow(stage_name: str, stop, reports, parent_pid: int) -> None:
    from ordersys_pipelines.cli import process, runtime

    settings = runtime.load_settings(need_redis=False, upgrade_schema=False)  # the parent migrated
    instance, resources = runtime.instance(), runtime.resources(settings)
    stage = process.stage_named(stage_name)
    count = 0
    while True:
        if os.getppid() != parent_pid:  # orphaned: nobody reads the reports, so do not wait on them
            reports.cancel_join_thread()
            return
        asked = stop.value  # read before the look: work found after it is still done
        if asked == ABORT:
            return
        if not stage.has_pending_work(settings):
            if asked == STOP:
                return
            time.sleep(POLL_SECONDS)
            continue
        started = time.perf_counter()
        result = process.run_stage(stage, settings, instance, resources)
        count += 1
        line = process.run_line(f"+{count:>2}", stage, result, time.perf_counter() - started)
        reports.put(Finished(result.job_def.name, result.run_id, line, result.success))
        if not result.success:
            return
        if not stage.took_work(result):  # what looked due is held by the other dispatcher
            if asked == STOP:
                return
            time.sleep(POLL_SECONDS)


class Alongside:
    """The parent's handle of the child running one stage."""

    def __init__(self, stage_name: str) -> None:
        self.stage_name = stage_name
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited locks
        self._stop = context.RawValue("b", GO_ON)
        self._reports = context.Queue()
        self._child = context.Process(target=follow, name=f"ordersys-{stage_name}",
                                      args=(stage_name, self._stop, self._reports, os.getpid()), daemon=True)
        self._child.start()
        self.finished: list[Finished] = []

    def collect(self, wait: float = 0.0) -> list[Finished]:
        """The runs the child reported since the last call (waiting up to `wait` for the first)."""
        new: list[Finished] = []
        try:
            new.append(self._reports.get(timeout=wait) if wait else self._reports.get_nowait())
            while True:
                new.append(self._reports.get_nowait())
        except queue.Empty:
            pass
        self.finished += new
        return new

    def failure(self) -> str | None:
        """Why the child cannot go on: a failed run, or the child dying; None while it is fine."""
        failed = next((f for f in self.finished if not f.success), None)
        if failed:
            return f"{self.stage_name} run {failed.run_id} failed; see the run's logs"
        if not self._child.is_alive() and self._child.exitcode:
            return f"the {self.stage_name} process ended with exit code {self._child.exitcode}"
        return None

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake as soon as the child ends (it reported a failed run, or died)."""
        multiprocessing.connection.wait([self._child.sentinel], timeout=seconds)

    def finish(self, on_report, abort: bool = False) -> None:
        """Tell the child to stop once nothing is due (with `abort`: after its current run),
        passing each run it reports to `on_report` while it works on (reading the queue keeps
        the child from blocking on it)."""
        self._stop.value = ABORT if abort else STOP
        while self._child.is_alive():
            for report in self.collect(wait=POLL_SECONDS):
                on_report(report)
        self._child.join()
        for report in self.collect():
            on_report(report)
