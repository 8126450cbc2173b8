"""The instance's run launcher: Dagster's default launcher, with each run's process forked from a
warm one instead of started cold.

Under the default launcher a run's process is a fresh Python that the code server spawns; before
the run's first step it imports Dagster and the instance's storage modules again (1.3-1.8 s of a
run's overhead here, for steps of a second or two). This launcher starts a run's process from a
fork server (`multiprocessing`'s "forkserver") that imported those modules once, so the process
begins with them loaded. The project's own code is not preloaded: each run imports the code
location from its origin, as `dagster api execute_run` does, so a code reload takes effect at
the next run.

The fork server is a single-threaded child of the launching process (the daemon); it only
imports, never connects. It is warmed in the background at the first launch, and until it is
warm runs go through the code server as before, as does a run whose Python is not this one (a
code location with its own `executable_path`).

Knowing its runs' processes, the launcher also tells run monitoring whether one still lives, so
a run whose process was killed fails within a monitoring interval instead of at its maximum
runtime, and the run retry policy takes it from there. Terminating a run (the UI's Terminate)
interrupts its process as the code server would.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData

WORKER_TAG = "ordersys/run_worker"
# What a run's process imports before its code location: Dagster's run entry point, then the
# libraries every stage's code uses. The instance's storage modules are added at the first launch.
DEFAULT_PRELOAD = ("dagster._cli.api", "dagster._core.execution.api", "sqlalchemy", "orjson", "jinja2", "redis")



def _nothing() -> None:
    """The warm-up process: its start returns once the fork server has imported the preload."""


class _ForkServer:
    """The process's fork server, warmed in the background at the first launch (runs until then
    go through the code server, so no run waits for the warm-up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: Any = None
        self._ready = threading.Event()

    def warm(self, preload: Sequence[str]) -> None:
        with self._lock:
            if self._context is not None:
                return
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload(list(preload))
        threading.Thread(target=self._warm_up, name="ordersys-fork-server", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            process = self._context.Process(target=_nothing)
            process.start()
            process.join()
            process.close()
        except Exception:  # the code server path goes on serving every run
            logging.getLogger(__name__).exception("The run fork server did not start; runs start cold")
            return
        self._ready.set()

    def context(self, wait: float = 0.0) -> Any:
        """The warm fork context, or None while the fork server is not warm yet."""
        return self._context if self._ready.wait(wait) else None


FORK_SERVER = _ForkServer()


def run_worker(serialized_args: str, environment: Mapping[str, str]) -> None:
    """A run's process: what `dagster api execute_run ARGS` runs, in the environment the launching
    process has now (a fork server's children would otherwise keep the one it had at warm-up)."""
    from dagster._cli.api import execute_run_command

    os.environ.clear()
    os.environ.update(environment)
    execute_run_command.callback(serialized_args, None)


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None where it does not exist, has
    exited (a zombie) or /proc cannot say. With the pid it tells this run's process from a later
    one that was given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; state is field 3, the
    # start time field 22.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _alive(worker: Mapping[str, Any]) -> bool:
    pid = int(worker["pid"])
    if Path("/proc").is_dir():
        started = process_start_ticks(pid)
        return started is not None and started == worker.get("started")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PrewarmedRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default run launcher, with run processes forked from a warm fork server."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        prewarm: bool = True,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ):
        super().__init__(inst_data=inst_data)
        self._prewarm = prewarm
        self._preload = tuple(preload)
        self._processes: dict[str, Any] = {}
        self._lock = threading.Lock()  # the run queue launches from several threads

    @classmethod
    def config_type(cls):
        return {
            "prewarm": dg.Field(dg.BoolSource, is_required=False, default_value=True),
            "preload": dg.Field([str], is_required=False, default_value=list(DEFAULT_PRELOAD)),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def _storage_modules(self) -> list[str]:
        instance = self._instance
        stores = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        return [type(store).__module__ for store in stores if store is not None]

    def _forks(self, run: DagsterRun) -> bool:
        origin = run.job_code_origin
        if not self._prewarm or origin is None:
            return False
        executable = origin.repository_origin.executable_path
        return os.path.abspath(executable) == os.path.abspath(sys.executable)

    def warm_up(self, timeout: float = 0.0) -> bool:
        """Start warming the fork server (once per process); True once it is warm."""
        FORK_SERVER.warm([*self._preload, *self._storage_modules()])
        return FORK_SERVER.context(timeout) is not None

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not self._forks(run) or not self.warm_up():
            super().launch_run(context)
            return
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        process = FORK_SERVER.context().Process(
            target=run_worker, args=(serialize_value(args), dict(os.environ)), name=f"dagster-run-{run.run_id}"
        )
        process.start()
        worker = {"pid": process.pid, "started": process_start_ticks(process.pid), "host": socket.gethostname()}
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: json.dumps(worker)})
        with self._lock:
            self._run_ids.add(run.run_id)
            # Ended processes' handles are let go here; the fork server reaps the processes.
            for run_id, earlier in list(self._processes.items()):
                if not earlier.is_alive():
                    earlier.close()
                    del self._processes[run_id]
            self._processes[run.run_id] = process

    @staticmethod
    def _worker(run: DagsterRun) -> dict[str, Any] | None:
        text = run.tags.get(WORKER_TAG)
        if not text:
            return None
        worker = json.loads(text)
        return worker if worker.get("host") == socket.gethostname() else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        worker = self._worker(run)
        self._instance.report_run_canceling(run)
        if worker is None or not _alive(worker):
            self._instance.report_engine_event(
                message="The run's process is not running on this machine; nothing to interrupt.",
                dagster_run=run,
                cls=self.__class__,
            )
            return False
        # What the code server's cancellation does: an interrupt in the run's main thread, which
        # stops the run between steps and marks it canceled.
        os.kill(int(worker["pid"]), signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run)
        if worker is None:
            # Launched through the code server, or on another machine: no process to look at,
            # so the maximum runtime is the only bound, as with the default launcher.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "process not known to this launcher")
        if _alive(worker):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker["pid"]))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"The run's process (pid {worker['pid']}) ended before the run did: it was killed or crashed.",
            run_worker_id=str(worker["pid"]),
        )
