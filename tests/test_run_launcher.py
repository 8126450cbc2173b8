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
from test_production_instance import instance_database  # noqa: F401  (a fixture)

from ordersys_pipelines.run_launcher import WORKER_TAG, PrewarmedRunLauncher, process_start_ticks

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


def test_terminate_cancels_a_running_run(deployment, tmp_path):
    instance, workspace = deployment
    release = tmp_path / "release"
    run_id = launch(instance, workspace, "waiting", {"release": str(release)})
    wait_for(Path(f"{release}.started"))
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
        tag = json.dumps({"pid": os.getpid(), "started": recorded, "host": socket.gethostname()})
        run = dg.DagsterRun(job_name="quick", tags={WORKER_TAG: tag})
        assert launcher.check_run_worker_health(run).status == expected


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
