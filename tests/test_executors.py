"""ORDERSYS_EXECUTOR selects where the op jobs' steps run; the Celery settings reach the executor."""

from __future__ import annotations

import pytest

from ordersys_pipelines.executors import celery_config, op_job_executor
from ordersys_pipelines.settings import Settings, SettingsError


def test_default_is_dagsters_own_executor(monkeypatch):
    monkeypatch.delenv("ORDERSYS_EXECUTOR", raising=False)
    assert op_job_executor(Settings.from_env()) is None


def test_celery_executor_carries_broker_queue_and_late_acks(monkeypatch):
    monkeypatch.setenv("ORDERSYS_EXECUTOR", "celery")
    monkeypatch.setenv("ORDERSYS_CELERY_QUEUE", "ordersys-eu")
    settings = Settings.from_env()
    executor = op_job_executor(settings)
    assert executor is not None and executor.name == "celery"
    config = celery_config(settings)
    assert config["broker"] == "pyamqp://guest:guest@127.0.0.1:5672//"
    assert config["backend"] == "rpc://"
    source = config["config_source"]
    assert source["task_default_queue"] == "ordersys-eu"
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]


def test_unknown_executor_is_refused(monkeypatch):
    monkeypatch.setenv("ORDERSYS_EXECUTOR", "threads")
    with pytest.raises(SettingsError, match="ORDERSYS_EXECUTOR='threads'"):
        Settings.from_env()
