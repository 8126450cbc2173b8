"""Dagster's event-write switches: set for the CLI's runs and the stack where unset, never over
a value the operator chose."""

from __future__ import annotations

import os
import subprocess
import sys

from ordersys_pipelines.cli import instance_home, runtime


def test_the_cli_instance_turns_on_batched_writes_and_one_planned_event(monkeypatch):
    for name in instance_home.DAGSTER_EVENT_ENV:
        monkeypatch.setenv(name, "")  # so monkeypatch puts the environment back as it was
        monkeypatch.delenv(name)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with runtime.instance():
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
        assert os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] == "true"


def test_a_value_already_set_wins(monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    instance_home.apply_event_env()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"


def test_the_stack_script_gets_shell_safe_export_lines(monkeypatch):
    env = {**os.environ, "DAGSTER_EVENT_BATCH_SIZE": "0; touch /tmp/never"}
    env.pop("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", None)
    done = subprocess.run([sys.executable, "-m", "ordersys_pipelines.cli.instance_home", "--event-env"],
                          env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["export DAGSTER_EVENT_BATCH_SIZE='0; touch /tmp/never'",
                                        "export DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=true"]
