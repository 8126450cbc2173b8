"""Step retries for what can heal: real connection failures (closed ports on the real servers'
host, a locked SQLite file) are transient and retried with growing pauses; a step that refuses
its data fails once, at once; the project's instance does not retry a run whose step failed."""

from __future__ import annotations

import dataclasses
import smtplib
import socket
import sqlite3
from datetime import date

import dagster as dg
import kombu
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ordersys_pipelines.assets.analytics import build_analytics, materialize_days
from ordersys_pipelines.cli import instance_home
from ordersys_pipelines.resources import RedisResource, build_resources
from ordersys_pipelines.step_retries import DATA_FAILURE, FAILURE_KIND, retry_transient, transient_cause


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raised(action) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test looks at what was raised
        return exc
    raise AssertionError("nothing was raised")


def test_connection_failures_of_every_service_are_transient():
    port = _closed_port()
    database = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/ordersys")
    redis_client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=2)
    broker = kombu.Connection(f"amqp://guest:guest@127.0.0.1:{port}//", connect_timeout=2)
    failures = {
        "database": _raised(lambda: database.connect()),
        "redis": _raised(redis_client.ping),
        "smtp": _raised(lambda: smtplib.SMTP("127.0.0.1", port, timeout=2)),
        "broker": _raised(lambda: broker.ensure_connection(max_retries=1)),
    }
    assert isinstance(failures["database"], OperationalError)
    for service, exc in failures.items():
        assert transient_cause(exc) is exc, service
        wrapped = _raised(lambda exc=exc: _reraise_as(RuntimeError("step failed"), exc))
        assert transient_cause(wrapped) is exc, service  # found behind what the domain raised from it


def _reraise_as(outer: BaseException, inner: BaseException):
    raise outer from inner


def test_sqlite_locked_heals_but_a_missing_table_or_a_broken_rule_does_not(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    holder.commit()
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.connect() as conn:
            locked = _raised(lambda: conn.execute(text("SELECT * FROM t")).all())
    finally:
        holder.rollback()
        holder.close()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with engine.connect() as conn:
        missing = _raised(lambda: conn.execute(text("SELECT * FROM nowhere")).all())
        duplicate = _raised(lambda: conn.execute(text("INSERT INTO t VALUES (1)")))
    engine.dispose()
    assert isinstance(locked, OperationalError) and transient_cause(locked) is locked
    assert isinstance(missing, OperationalError) and transient_cause(missing) is None
    assert isinstance(duplicate, IntegrityError) and transient_cause(duplicate) is None
    assert transient_cause(ValueError("bad amount")) is None
    # A verdict on the data is final, whatever it was raised from.
    verdict = _raised(lambda: _reraise_as(dg.Failure("refused", allow_retries=False), ConnectionRefusedError()))
    assert transient_cause(verdict) is None


@dg.op(config_schema={"heal_after": int, "redis_url": str, "healed_url": str})
@retry_transient
def ping_redis(context) -> None:
    """Redis refuses (a closed port) until the attempt `heal_after`, then answers."""
    healed = context.retry_number >= context.op_config["heal_after"]
    url = context.op_config["healed_url" if healed else "redis_url"]
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


@dg.op
@retry_transient
def refuse_the_file(context) -> None:
    raise dg.Failure("march.csv: missing required column(s): unit_price", allow_retries=False)


@dg.job
def redis_job() -> None:
    ping_redis()


@dg.job
def data_job() -> None:
    refuse_the_file()


def _retry_waits(result) -> list[float]:
    return [e.event_specific_data.seconds_to_wait for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


@pytest.fixture
def retries(monkeypatch):
    monkeypatch.setenv("ORDERSYS_STEP_RETRIES", "3")
    monkeypatch.setenv("ORDERSYS_STEP_RETRY_DELAY", "0.1")


def _ping_config(heal_after: int, healed_url: str) -> dict:
    refusing = f"redis://127.0.0.1:{_closed_port()}/0"
    return {"ops": {"ping_redis": {"config": {"heal_after": heal_after, "redis_url": refusing, "healed_url": healed_url}}}}


def test_a_transient_failure_is_retried_with_growing_pauses_then_succeeds(retries, redis_resource):
    config = _ping_config(2, redis_resource.url)
    result = redis_job.execute_in_process(run_config=config, raise_on_error=False)
    assert result.success
    waits = _retry_waits(result)
    assert len(waits) == 2
    # Exponential with +/- one delay of jitter: attempt 1 waits 0.1 +/- 0.1, attempt 2 0.3 +/- 0.1.
    assert 0 <= waits[0] <= 0.2 <= waits[1] <= 0.4


def test_a_transient_failure_that_does_not_heal_fails_after_the_last_retry(retries, redis_resource):
    config = _ping_config(99, redis_resource.url)
    result = redis_job.execute_in_process(run_config=config, raise_on_error=False)
    assert not result.success and len(_retry_waits(result)) == 3
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.error.message.startswith("Exceeded max_retries of 3")


def test_a_data_failure_fails_once_and_says_so():
    result = data_job.execute_in_process(raise_on_error=False)
    assert not result.success and _retry_waits(result) == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_failure_data.user_failure_data.metadata[FAILURE_KIND].value == DATA_FAILURE


def test_the_kpis_retry_while_redis_refuses(settings, retries, monkeypatch):
    monkeypatch.setenv("ORDERSYS_STEP_RETRIES", "1")
    settings = dataclasses.replace(settings, kpi_start_date="2025-01-01")
    analytics = build_analytics(settings)
    refusing = RedisResource(url=f"redis://127.0.0.1:{_closed_port()}/0", key_prefix=settings.redis_key_prefix)
    resources = {**build_resources(settings), "redis": refusing}
    result = materialize_days(analytics, resources, date(2025, 3, 1), date(2025, 3, 2), instance=None)
    assert not result.success
    retried = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY}
    # The leaderboard depends on the days: once their step failed for good, it does not start.
    assert retried == {"daily_kpis"}
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert started == {"daily_kpis"}


def test_the_instance_does_not_retry_a_run_whose_step_failed(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    home = instance_home.write(tmp_path / "dagster_home")  # the project's dagster.yaml: run retries on
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        result = data_job.execute_in_process(instance=instance, raise_on_error=False)
        run = instance.get_run_by_id(result.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE and run.tags["dagster/will_retry"] == "false"
