"""ORDERSYS_EXECUTOR selects where the op jobs' steps run; the Celery settings reach the executor."""

from __future__ import annotations

import dagster as dg
import pytest

from ordersys_pipelines.executors import celery_config, default_executor, op_job_executor
from ordersys_pipelines.settings import Settings, SettingsError


def test_default_runs_every_step_in_the_runs_own_process(monkeypatch):
    monkeypatch.delenv("ORDERSYS_EXECUTOR", raising=False)
    settings = Settings.from_env()
    assert op_job_executor(settings) is dg.in_process_executor
    assert default_executor(settings) is dg.in_process_executor


def test_multiprocess_stays_choosable_for_every_job(monkeypatch):
    monkeypatch.setenv("ORDERSYS_EXECUTOR", "multiprocess")
    settings = Settings.from_env()
    assert op_job_executor(settings) is dg.multiprocess_executor
    assert default_executor(settings) is dg.multiprocess_executor


def test_the_definitions_jobs_carry_the_chosen_executor(monkeypatch):
    from ordersys_pipelines.definitions import build_defs

    for choice, executor in (("in_process", dg.in_process_executor), ("multiprocess", dg.multiprocess_executor)):
        monkeypatch.setenv("ORDERSYS_EXECUTOR", choice)
        repository = build_defs().get_repository_def()
        for name in ("order_workflow", "payment_settlement", "notification_dispatch", "orders_import",
                     "analytics_refresh"):
            assert repository.get_job(name).executor_def.name == executor.name, (choice, name)


def test_celery_executor_carries_broker_queue_and_late_acks(monkeypatch):
    monkeypatch.setenv("ORDERSYS_EXECUTOR", "celery")
    monkeypatch.setenv("ORDERSYS_CELERY_QUEUE", "ordersys-eu")
    settings = Settings.from_env()
    executor = op_job_executor(settings)
    assert executor.name == "celery"
    assert default_executor(settings) is dg.in_process_executor  # asset jobs never go to Celery
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
