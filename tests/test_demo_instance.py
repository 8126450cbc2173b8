"""`ordersys demo` records its runs in the instance `make up` shows (DAGSTER_HOME, default
`.dagster_home`), and with nothing configured writes into no Redis but its embedded one."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from ordersys_pipelines.cli import main
from ordersys_pipelines.resources.redis import connect

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# The workflow runs settle the callbacks the simulated gateway answers at once, so the demo needs
# no payment_settlement run (ORDERSYS_SETTLE_IN_WORKFLOW).
WORK_JOBS = {"order_workflow", "refund_processing", "notification_dispatch", "analytics_refresh"}


def _demo() -> str:
    result = CliRunner().invoke(main, ["demo", "--rows", "60", "--bad-rows", "2", "--seed", "5", "--refunds", "2"],
                                catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def demo_env(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ORDERSYS_INBOX", str(tmp_path / "inbox"))
    monkeypatch.setenv("ORDERSYS_GATEWAY_REFUND_FAILURE_RATE", "0")
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    return tmp_path


def _job_names(home: Path) -> dict[str, set[str]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
    names: dict[str, set[str]] = {}
    for run in runs:
        names.setdefault(run.job_name, set()).add(run.status.value)
    return names


def test_the_demo_runs_are_in_the_instance_given(demo_env, redis_resource, monkeypatch):
    home = demo_env / "somewhere" / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ORDERSYS_REDIS_URL", redis_resource.url)
    monkeypatch.setenv("ORDERSYS_REDIS_PREFIX", redis_resource.key_prefix)
    output = _demo()
    assert f"recorded in the Dagster instance in {home}" in output
    jobs = _job_names(home)
    assert WORK_JOBS <= set(jobs), jobs
    assert all(statuses == {"SUCCESS"} for statuses in jobs.values()), jobs
    written = (home / "dagster.yaml").read_text()
    assert "SQLite files in this folder" in written and "PostgreSQL when" not in written
    assert "tag_concurrency_limits" in written  # the same limits as `make up`


def test_unconfigured_the_demo_uses_dagster_home_and_the_embedded_redis(demo_env, monkeypatch):
    for name in ("DAGSTER_HOME", "ORDERSYS_REDIS_URL", "ORDERSYS_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    default = connect(DEFAULT_REDIS)
    # Other test sessions share db 0 (under prefixes of their own, or, in an older checkout,
    # without one): what matters is that none of the demo's own values lands there.
    before_days = {key: default.hgetall(key) for key in default.scan_iter(match="kpi:daily:*", count=1000)}
    before_board = default.zrange("leaderboard:customers", 0, -1, withscores=True)

    output = _demo()
    embedded_url = next(line.split()[1] for line in output.splitlines() if line.startswith("redis "))
    assert embedded_url.startswith("unix://") and str(demo_env) in embedded_url
    embedded = connect(embedded_url)
    try:
        demo_days = {key: embedded.hgetall(key) for key in embedded.scan_iter(match="kpi:daily:*")}
        demo_board = embedded.zrange("leaderboard:customers", 0, -1, withscores=True)
        assert demo_days and demo_board  # the demo wrote its figures, there
        for key, values in demo_days.items():
            now = default.hgetall(key)
            assert now == before_days.get(key, {}) or now != values, f"{key} written into {DEFAULT_REDIS}"
        board = default.zrange("leaderboard:customers", 0, -1, withscores=True)
        assert board == before_board or board != demo_board
    finally:
        embedded.shutdown(nosave=True)

    jobs = _job_names(demo_env / ".dagster_home")
    assert WORK_JOBS <= set(jobs), jobs
