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
code location with its own `executable_path`), a run of a code server started on its own (a
`grpc_server` entry: its machine and environment may not be the daemon's), and a run whose fork
failed (the fork server gone and not restartable) with every later run of the process.

The fork server's child forks the run's process, hands its pid back and ends at once: the run's
process is nobody's multiprocessing child, so a daemon that stops does not wait for its runs
(Python joins every multiprocessing child at exit), and the runs go on as under the code server.

Knowing its runs' processes, the launcher also tells run monitoring whether one still lives, so
a run whose process was killed fails within a monitoring interval instead of at its maximum
runtime, and the run retry policy takes it from there. Terminating a run (the UI's Terminate)
interrupts its process as the code server would.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, ManagedGrpcPythonEnvCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData

WORKER_TAG = "ordersys/run_worker"
# What a run's process imports before its code location: Dagster's run entry point, then the
# libraries every stage's code uses. The instance's storage modules are added at the first launch.
DEFAULT_PRELOAD = ("dagster._cli.api", "dagster._core.execution.api", "sqlalchemy", "orjson", "jinja2", "redis")
# How long a launch waits for the run's pid from the fork server's child (it forks and answers).
PID_TIMEOUT_SECONDS = 30.0
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
log = logging.getLogger(__name__)


def _nothing() -> None:
    """The warm-up process: its start returns once the fork server has imported the preload."""


class _ForkServer:
    """The process's fork server, warmed in the background at the first launch (runs until then
    go through the code server, so no run waits for the warm-up)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: Any = None
        self._owner: int | None = None  # the process that started it (a forked copy cannot use it)
        self._ready = threading.Event()

    def warm(self, preload: Sequence[str]) -> None:
        with self._lock:
            if self._context is not None:
                return
            # The fork server ignores a module it cannot import; say so here instead.
            missing = [name for name in preload if not _importable(name)]
            if missing:
                log.warning("Run fork server: cannot import %s; not preloaded", ", ".join(missing))
            self._context = multiprocessing.get_context("forkserver")
            self._context.set_forkserver_preload([name for name in preload if name not in missing])
            self._owner = os.getpid()
        threading.Thread(target=self._warm_up, name="ordersys-fork-server", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            process = self._context.Process(target=_nothing)
            process.start()
            process.join()
            process.close()
        except Exception:  # the code server path goes on serving every run
            log.exception("The run fork server did not start; runs start cold")
            return
        self._ready.set()

    def give_up(self) -> None:
        """After a fork that failed (the fork server could not be started again): every later
        launch would pay for the same failed start, so runs go through the code server until the
        process restarts."""
        self._ready.clear()
        log.warning("The run fork server failed; runs go through the code server until the daemon restarts")

    def context(self, wait: float = 0.0) -> Any:
        """The warm fork context, or None while the fork server is not warm yet or belongs to the
        process this one was forked from."""
        if self._owner != os.getpid():
            return None
        return self._context if self._ready.wait(wait) else None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


FORK_SERVER = _ForkServer()


def run_worker(serialized_args: str, environment: Mapping[str, str], pid_sender: Any) -> None:
    """The fork server's child: forks the run's process, sends its pid and ends. The run's
    process runs what `dagster api execute_run ARGS` runs, in the environment the launching
    process has now (a fork server's children would otherwise keep the one it had at warm-up)."""
    pid = os.fork()
    if pid:
        pid_sender.send(pid)
        return
    pid_sender.close()
    from dagster._cli.api import execute_run_command

    os.environ.clear()
    os.environ.update(environment)
    time.tzset()  # TZ as the launching process has it now
    execute_run_command.callback(serialized_args, None)


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None where it does not exist, has
    exited (a zombie) or /proc cannot say. With the pid it tells this run's process from a later
    one that was given the same pid."""
    fields = proc_stat(pid)
    # fields[0] is the state (field 3 of the file), fields[19] the start time (field 22).
    return None if fields is None or fields[0] in ("Z", "X") else int(fields[19])


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    return stat.rsplit(")", 1)[1].split()


def pid_namespace() -> str | None:
    """This process's pid namespace (e.g. "pid:[4026531836]"): containers sharing a host name
    (host networking) have their own, and a pid means nothing outside its namespace."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _where() -> dict[str, str | None]:
    return {"host": socket.gethostname(), "pid_namespace": pid_namespace()}


def _here(worker: Mapping[str, Any]) -> bool:
    """Was the recorded process started on this machine, in this pid namespace (older tags have
    no namespace)?"""
    here = _where()
    return worker.get("host") == here["host"] and worker.get("pid_namespace", here["pid_namespace"]) == here["pid_namespace"]


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


def _served_here(run: DagsterRun) -> bool:
    """Is the run's code location one Dagster serves from this process's own environment: a code
    server it starts itself, or one `dagster dev` starts (a local gRPC entry that carries the
    loadable target it was started from)? A code server started on its own runs its runs in its
    own environment, perhaps on another machine, so those go through it."""
    remote = run.remote_job_origin
    location = remote.repository_origin.code_location_origin if remote else None
    if isinstance(location, ManagedGrpcPythonEnvCodeLocationOrigin):
        return True
    return (isinstance(location, GrpcServerCodeLocationOrigin) and bool(location.additional_metadata)
            and (location.socket is not None or location.host in LOCAL_HOSTS))


class _NoRunProcess(Exception):
    """The fork did not start the run's process."""


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
        if not self._prewarm or origin is None or not _served_here(run):
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
        try:
            pid = self._fork_run(run)
        except _NoRunProcess as exc:
            FORK_SERVER.give_up()
            self._instance.report_engine_event(
                f"The run's process could not be forked ({exc}); launching it through the code server.",
                dagster_run=run, cls=self.__class__,
            )
            super().launch_run(context)
            return
        if pid is None:  # a fork server child that neither answered nor ended: leave it to monitoring
            self._instance.report_engine_event(
                f"The run's process did not report its pid within {PID_TIMEOUT_SECONDS:.0f} s; run monitoring "
                "fails the run if it does not start.", dagster_run=run, cls=self.__class__,
            )
            return
        worker = {"pid": pid, "started": process_start_ticks(pid), **_where()}
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: json.dumps(worker)})
        self._run_ids.add(run.run_id)

    def _fork_run(self, run: DagsterRun) -> int | None:
        """The pid of the run's new process; None if the fork server's child did not say in time.
        Raises _NoRunProcess when it is certain no process for the run was started."""
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        args = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        fork_context = FORK_SERVER.context()
        receiver, sender = fork_context.Pipe(duplex=False)
        process = fork_context.Process(
            target=run_worker, args=(serialize_value(args), dict(os.environ), sender), name=f"dagster-run-{run.run_id}"
        )
        failure: Exception | None = None
        try:
            process.start()
        except Exception as exc:  # e.g. the fork server was killed and its restart failed
            failure = exc
        finally:
            sender.close()  # from now on only the fork server's child holds the sending end
        try:
            # Read even after a failed start: a child forked before the failure still answers.
            # End of file: every sending end is closed and no pid came, so no run process exists.
            if not receiver.poll(PID_TIMEOUT_SECONDS):
                return None
            return receiver.recv()
        except EOFError:
            raise _NoRunProcess(repr(failure) if failure else "the fork server's child ended without forking") from failure
        finally:
            receiver.close()
            if failure is None:
                process.join(PID_TIMEOUT_SECONDS)
                if process.exitcode is not None:
                    process.close()

    @staticmethod
    def _worker(run: DagsterRun) -> dict[str, Any] | None:
        """The run's process as its tag records it; None for a run launched through the code server."""
        text = run.tags.get(WORKER_TAG)
        return json.loads(text) if text else None

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or WORKER_TAG not in run.tags:
            return super().terminate(run_id)
        worker = self._worker(run)
        if not _here(worker):
            self._instance.report_run_canceling(run)
            self._instance.report_engine_event(
                f"The run's process runs on {worker.get('host')!r}, not on this machine "
                "(or in another container); nothing to interrupt from here.", dagster_run=run, cls=self.__class__,
            )
            return False
        if not _alive(worker):
            # Whatever the process wrote before it ended is final: a run it did not finish is over.
            latest = self._instance.get_run_by_id(run_id)
            if latest is None or latest.is_finished:
                return False
            self._instance.report_run_canceled(
                latest, message=f"The run's process (pid {worker['pid']}) had already ended; the run is canceled."
            )
            return True
        self._instance.report_run_canceling(run)
        # What the code server's cancellation does: an interrupt in the run's main thread, which
        # stops the run between steps and marks it canceled.
        os.kill(int(worker["pid"]), signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run)
        if worker is None or not _here(worker):
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
