"""The instance's run launcher (ordersys_pipelines/run_launcher.py) on a real instance and code
server: runs start in prewarmed processes, terminate, and a killed run's process is seen dead."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.test_utils import instance_for_test, poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from process_support import child_pids
from test_production_instance import instance_database  # noqa: F401  (a fixture)

from ordersys_pipelines.run_launcher import (
    WORKER_TAG,
    PrewarmedRunLauncher,
    pid_namespace,
    process_start_ticks,
)

ROOT = Path(__file__).resolve().parents[1]
JOBS_FILE = Path(__file__).with_name("launcher_jobs.py")
LAUNCHER = {"module": "ordersys_pipelines.run_launcher", "class": "PrewarmedRunLauncher"}


@pytest.fixture(params=[True, False], ids=["prewarmed", "code-server"])
def prewarm(request) -> bool:
    return request.param


@pytest.fixture
def deployment(tmp_path, prewarm) -> Iterator[tuple[dg.DagsterInstance, object]]:
    overrides = {"run_launcher": {**LAUNCHER, "config": {"prewarm": prewarm}}}
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        target = PythonFileTarget(str(JOBS_FILE), attribute="defs", working_directory=str(JOBS_FILE.parent),
                                  location_name="launcher_jobs")
        with WorkspaceProcessContext(instance, target) as process_context:
            if prewarm:
                assert instance.run_launcher.warm_up(timeout=60)
            yield instance, process_context.create_request_context()


def launch(instance: dg.DagsterInstance, workspace, job_name: str, tags: dict[str, str] | None = None) -> str:
    from launcher_jobs import defs

    location = workspace.get_code_location("launcher_jobs")
    remote_job = location.get_repository("__repository__").get_full_job(job_name)
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def(job_name),
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        tags=tags or {},
    )
    instance.launch_run(run.run_id, workspace)
    return run.run_id


def messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [record.message for record in instance.all_logs(run_id) if record.message]


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_the_instance_file_names_this_launcher():
    with instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        assert isinstance(instance.run_launcher, PrewarmedRunLauncher)
        assert instance.run_launcher.supports_check_run_worker_health
    text = (ROOT / "dagster.yaml").read_text()
    assert re.search(r"^run_launcher:\n  module: ordersys_pipelines\.run_launcher\n  class: PrewarmedRunLauncher$", text, re.M)


def test_a_run_succeeds_in_a_prewarmed_process_or_through_the_code_server(deployment, prewarm, monkeypatch):
    instance, workspace = deployment
    # Set after the fork server warmed up: the run's process still has it, as a spawned one would.
    monkeypatch.setenv("LAUNCHER_TEST_PROBE", "set-after-warm-up")
    run_id = launch(instance, workspace, "quick")
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.SUCCESS, messages(instance, run_id)
    line = next(m for m in messages(instance, run_id) if m.startswith("process pid="))
    assert line.endswith(f"orjson_preloaded={prewarm}")
    if prewarm:
        worker = json.loads(run.tags[WORKER_TAG])
        assert line.startswith(f"process pid={worker['pid']} probe=set-after-warm-up ")
        assert GRPC_INFO_TAG not in run.tags
    else:
        assert WORKER_TAG not in run.tags and GRPC_INFO_TAG in run.tags


def test_terminate_cancels_a_running_run(deployment, prewarm, tmp_path):
    instance, workspace = deployment
    release = tmp_path / "release"
    run_id = launch(instance, workspace, "waiting", {"release": str(release)})
    wait_for(Path(f"{release}.started"))
    assert (WORKER_TAG in instance.get_run_by_id(run_id).tags) == prewarm
    assert instance.run_launcher.terminate(run_id)
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.CANCELED, messages(instance, run_id)


def test_a_killed_run_process_is_reported_failed_and_monitoring_fails_the_run(tmp_path):
    overrides = {"run_launcher": LAUNCHER}
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        target = PythonFileTarget(str(JOBS_FILE), attribute="defs", working_directory=str(JOBS_FILE.parent),
                                  location_name="launcher_jobs")
        with WorkspaceProcessContext(instance, target) as process_context:
            workspace = process_context.create_request_context()
            assert instance.run_launcher.warm_up(timeout=60)
            release = tmp_path / "release"
            run_id = launch(instance, workspace, "waiting", {"release": str(release)})
            wait_for(Path(f"{release}.started"))
            run = instance.get_run_by_id(run_id)
            assert run.status == DagsterRunStatus.STARTED
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status == WorkerStatus.RUNNING, health

            os.kill(json.loads(run.tags[WORKER_TAG])["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while instance.run_launcher.check_run_worker_health(run).status != WorkerStatus.FAILED:
                assert time.monotonic() < deadline, "the killed process still looks alive"
                time.sleep(0.05)
            assert "was killed or crashed" in instance.run_launcher.check_run_worker_health(run).msg

            monitor_started_run(instance, workspace, instance.get_run_record_by_id(run_id), logging.getLogger("test"))
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE


def test_a_pid_given_to_a_later_process_is_not_taken_for_the_run():
    """The tag holds the pid and its start time: this test process has the pid but started at
    another time than the tag says, so the run's process counts as gone."""
    started = process_start_ticks(os.getpid())
    assert started is not None
    launcher = PrewarmedRunLauncher()
    for recorded, expected in ((started, WorkerStatus.RUNNING), (started - 1, WorkerStatus.FAILED)):
        tag = json.dumps({"pid": os.getpid(), "started": recorded, "host": socket.gethostname(),
                          "pid_namespace": pid_namespace()})
        run = dg.DagsterRun(job_name="quick", tags={WORKER_TAG: tag})
        assert launcher.check_run_worker_health(run).status == expected


def test_a_pid_of_another_container_on_the_same_host_is_not_looked_at():
    """Same host name, other pid namespace (containers with host networking): the pid means
    nothing here, so health is left to the runtime limit and terminate interrupts nothing."""
    tag = json.dumps({"pid": os.getpid(), "started": process_start_ticks(os.getpid()), "host": socket.gethostname(),
                      "pid_namespace": "pid:[1]"})
    run = dg.DagsterRun(job_name="quick", tags={WORKER_TAG: tag})
    health = PrewarmedRunLauncher().check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING and health.msg == "process not known to this launcher"


def test_a_run_from_another_launcher_is_left_to_the_runtime_limit():
    """No worker tag (launched through the code server): run monitoring must not fail it."""
    assert PrewarmedRunLauncher().check_run_worker_health(dg.DagsterRun(job_name="quick")).status == WorkerStatus.RUNNING


def test_on_the_production_instance_the_fork_server_preloads_dagster_postgres(tmp_path, instance_database):  # noqa: F811
    """dagster.yaml as it is (PostgreSQL storage): the storage modules join the preload and a run
    launched in a prewarmed process stores its events in PostgreSQL."""
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, PrewarmedRunLauncher)
        modules = launcher._storage_modules()
        assert len(modules) == 3 and all(m.startswith("dagster_postgres") for m in modules), modules
        target = PythonFileTarget(str(JOBS_FILE), attribute="defs", working_directory=str(JOBS_FILE.parent),
                                  location_name="launcher_jobs")
        with WorkspaceProcessContext(instance, target) as process_context:
            assert launcher.warm_up(timeout=60)
            run_id = launch(instance, process_context.create_request_context(), "quick")
            run = poll_for_finished_run(instance, run_id, timeout=60)
        assert run.status == DagsterRunStatus.SUCCESS, messages(instance, run_id)
        assert any(m.endswith("orjson_preloaded=True") for m in messages(instance, run_id))
        # The run's process ends on its own, before its database goes away.
        worker = json.loads(run.tags[WORKER_TAG])
        deadline = time.monotonic() + 30
        while process_start_ticks(worker["pid"]) == worker["started"]:
            assert time.monotonic() < deadline, "the run's process outlived its run by 30 s"
            time.sleep(0.05)


def running_pid(run: dg.DagsterRun) -> int:
    worker = json.loads(run.tags[WORKER_TAG])
    assert process_start_ticks(worker["pid"]) == worker["started"]
    return worker["pid"]


@pytest.mark.parametrize("prewarm", [True], ids=["prewarmed"])
def test_terminating_a_run_whose_process_is_gone_cancels_it_at_once(deployment, tmp_path):
    instance, workspace = deployment
    release = tmp_path / "release"
    run_id = launch(instance, workspace, "waiting", {"release": str(release)})
    wait_for(Path(f"{release}.started"))
    pid = running_pid(instance.get_run_by_id(run_id))
    os.kill(pid, signal.SIGKILL)
    while process_start_ticks(pid) is not None:
        time.sleep(0.05)
    assert instance.run_launcher.terminate(run_id)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED
    assert any("had already ended" in m for m in messages(instance, run_id))


@pytest.mark.parametrize("prewarm", [True], ids=["prewarmed"])
def test_a_killed_fork_server_is_started_again_at_the_next_launch(deployment):
    instance, workspace = deployment
    servers = [pid for pid in child_pids(os.getpid()) if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(servers) == 1, servers
    os.kill(servers[0], signal.SIGKILL)
    run_id = launch(instance, workspace, "quick")
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.SUCCESS and WORKER_TAG in run.tags, messages(instance, run_id)


class _BrokenForkContext:
    """A fork context whose fork server cannot be reached, as after it was killed and its restart
    failed: starting a process raises before anything was forked."""

    def __init__(self, real):
        self._real = real

    def Pipe(self, duplex: bool):  # noqa: N802  (multiprocessing's name)
        return self._real.Pipe(duplex=duplex)

    def Process(self, **kwargs):  # noqa: N802
        process = self._real.Process(**kwargs)

        def start():
            raise EOFError("the fork server closed the connection")

        process.start = start
        return process


@pytest.mark.parametrize("prewarm", [True], ids=["prewarmed"])
def test_a_run_whose_fork_fails_is_launched_through_the_code_server(deployment, monkeypatch):
    instance, workspace = deployment
    from ordersys_pipelines import run_launcher

    server = run_launcher.FORK_SERVER
    ready = threading.Event()
    ready.set()
    monkeypatch.setattr(server, "_ready", ready)  # this test's: the fork server gives up on it
    monkeypatch.setattr(server, "_context", _BrokenForkContext(server.context()))
    run_id = launch(instance, workspace, "quick")
    run = poll_for_finished_run(instance, run_id, timeout=60)
    assert run.status == DagsterRunStatus.SUCCESS, messages(instance, run_id)
    assert WORKER_TAG not in run.tags and GRPC_INFO_TAG in run.tags
    assert any("could not be forked" in m and "EOFError" in m for m in messages(instance, run_id))
    # Once per run: the fallback is the only launch.
    assert len([m for m in messages(instance, run_id) if m.startswith("process pid=")]) == 1
    # Later runs go through the code server straight away, without trying the fork again.
    later = poll_for_finished_run(instance, launch(instance, workspace, "quick"), timeout=60)
    assert later.status == DagsterRunStatus.SUCCESS and GRPC_INFO_TAG in later.tags
    assert not any("could not be forked" in m for m in messages(instance, later.run_id))


def test_only_code_servers_dagster_starts_here_have_their_runs_forked():
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        ManagedGrpcPythonEnvCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from ordersys_pipelines.run_launcher import _served_here

    def run_of(location) -> dg.DagsterRun:
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "quick")
        return dg.DagsterRun(job_name="quick", remote_job_origin=origin)

    target = LoadableTargetOrigin(python_file=str(JOBS_FILE), attribute="defs")
    dev_metadata = target.as_dict  # what `dagster dev` gives the code servers it starts
    assert _served_here(run_of(ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name="a")))
    assert _served_here(run_of(GrpcServerCodeLocationOrigin("localhost", port=4000, location_name="a",
                                                            additional_metadata=dev_metadata)))
    assert _served_here(run_of(GrpcServerCodeLocationOrigin("localhost", socket="/tmp/s", location_name="a",
                                                            additional_metadata=dev_metadata)))
    # Started on their own (a `grpc_server` entry): their runs go through them.
    assert not _served_here(run_of(GrpcServerCodeLocationOrigin("localhost", port=4000, location_name="a")))
    assert not _served_here(run_of(GrpcServerCodeLocationOrigin("code.internal", port=4000, location_name="a",
                                                                additional_metadata=dev_metadata)))
    assert not _served_here(dg.DagsterRun(job_name="quick"))


LAUNCH_AND_LEAVE = """
import sys, time
from pathlib import Path
import dagster as dg
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import PythonFileTarget
from test_run_launcher import JOBS_FILE, launch, wait_for

home, release = sys.argv[1], Path(sys.argv[2])
with dg.DagsterInstance.from_config(home) as instance:
    target = PythonFileTarget(str(JOBS_FILE), attribute="defs", working_directory=str(JOBS_FILE.parent),
                              location_name="launcher_jobs")
    with WorkspaceProcessContext(instance, target) as process_context:
        assert instance.run_launcher.warm_up(timeout=60)
        run_id = launch(instance, process_context.create_request_context(), "waiting",
                        {"release": str(release), "wait_seconds": "600"})
        wait_for(Path(f"{release}.started"))
print("launched run", run_id, flush=True)
"""


def test_a_launching_process_that_stops_does_not_wait_for_its_runs(tmp_path):
    """A daemon that stops (or restarts) must not hang until its runs end; they go on without it."""
    (tmp_path / "dagster.yaml").write_text(
        "run_launcher:\n  module: ordersys_pipelines.run_launcher\n  class: PrewarmedRunLauncher\n"
        "telemetry:\n  enabled: false\n"
    )
    release = tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(JOBS_FILE.parent)])}
    # Output to files: the run's process inherits them, and a pipe would stay open while it runs.
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    launcher = None
    try:
        with out.open("w") as stdout, err.open("w") as stderr:
            launcher = subprocess.Popen([sys.executable, "-c", LAUNCH_AND_LEAVE, str(tmp_path), str(release)],
                                        env=env, cwd=JOBS_FILE.parent, stdout=stdout, stderr=stderr)
            assert launcher.wait(timeout=300) == 0, err.read_text()[-3000:]
        # The run waits for its release file for ten minutes: a launcher that waited for it
        # would have timed out above; this one left with the run still going.
        run_id = re.search(r"^launched run (\S+)$", out.read_text(), re.M).group(1)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run.status == DagsterRunStatus.STARTED
            running_pid(run)
            release.write_text("go")
            run = poll_for_finished_run(instance, run_id, timeout=60)
            assert run.status == DagsterRunStatus.SUCCESS, messages(instance, run_id)
    finally:
        release.write_text("go")  # a failed check leaves no run waiting ten minutes
        if launcher is not None and launcher.poll() is None:
            launcher.kill()
