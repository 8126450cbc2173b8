"""`ordersys kpi` and `ordersys leaderboard`: rebuild through the CLI, then read from Redis
with a database URL that cannot answer, proving the readers never touch the database."""

from __future__ import annotations

import pytest
from analytics_data import crafted_march
from click.testing import CliRunner

from ordersys_pipelines.cli import main

UNREACHABLE_DB = "postgresql://nobody@127.0.0.1:1/unreachable"


@pytest.fixture
def cli_env(settings, monkeypatch):
    """The test database and Redis prefix, KPIs in Berlin from 2024-03-01, no DAGSTER_HOME."""
    monkeypatch.setenv("ORDERSYS_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("ORDERSYS_KPI_START_DATE", "2024-03-01")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return settings


@pytest.fixture
def redis_only(monkeypatch, redis_resource):
    """Redis under the session prefix; the database URL points at nothing."""
    monkeypatch.setenv("ORDERSYS_REDIS_URL", redis_resource.url)
    monkeypatch.setenv("ORDERSYS_REDIS_PREFIX", redis_resource.key_prefix)
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", UNREACHABLE_DB)
    monkeypatch.setenv("ORDERSYS_TIMEZONE", "Europe/Berlin")
    return redis_resource


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_backfill_then_read_kpis_and_leaderboard_without_the_database(cli_env, engine, monkeypatch):
    crafted_march(engine)
    built = invoke("kpi", "backfill", "--from", "2024-03-09", "--to", "2024-03-12")
    assert built.exit_code == 0, built.output
    assert "4 day(s) 2024-03-09 .. 2024-03-12 and the leaderboard" in built.output

    monkeypatch.setenv("ORDERSYS_DATABASE_URL", UNREACHABLE_DB)
    shown = invoke("kpi", "--date", "2024-03-10")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "KPIs for 2024-03-10 (Europe/Berlin)"
    table = {line[:22].strip(): line[22:].strip() for line in lines[3:]}
    assert table["Orders"] == "3"
    assert table["Gross revenue"] == "126.01 EUR"
    assert table["Refunds"] == "0 (0.00 EUR)"
    assert table["Net revenue"] == "126.01 EUR"
    assert table["Average order value"] == "42.00 EUR"
    assert table["Failed orders"] == "1" and table["Cancelled orders"] == "1"
    assert table["Notifications sent"] == "3" and table["Notifications failed"] == "1"

    refunds_day = invoke("kpi", "--date", "2024-03-12")
    assert "2 (40.00 EUR)" in refunds_day.output and "-40.00 EUR" in refunds_day.output

    board = invoke("leaderboard", "--top", "1")
    assert board.exit_code == 0, board.output
    assert "Alice" in board.output and "95.99 EUR" in board.output and "Bob" not in board.output
    alice_row = next(line for line in board.output.splitlines() if "Alice" in line)
    assert "@example.com" in alice_row  # the e-mail column
    full = invoke("leaderboard")
    rows = [line.split() for line in full.output.splitlines()[2:]]
    assert [(row[0], row[1], row[-2]) for row in rows] == [("1", "Alice", "95.99"), ("2", "Bob", "40.02")]


def test_refresh_covers_every_day_with_data(cli_env, engine, redis_resource):
    crafted_march(engine)
    result = invoke("kpi", "refresh")
    assert result.exit_code == 0, result.output
    assert "4 day(s) 2024-03-09 .. 2024-03-12" in result.output
    client = redis_resource.client()
    assert client.hget(redis_resource.key("kpi:daily:2024-03-09"), "order_count") == "1"
    assert client.hget(redis_resource.key("kpi:daily:2024-03-12"), "refund_amount_cents") == "4000"
    assert not client.exists(redis_resource.key("kpi:daily:2024-03-13"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kpi", "--date", "2024-13-01"], "--date '2024-13-01' is not a date (expected YYYY-MM-DD)"),
        (["kpi", "--date", "yesterday"], "--date 'yesterday' is not a date"),
        (["kpi", "--date", "2024-03-20"], "no KPIs for 2024-03-20 in Redis"),
        (["kpi", "backfill", "--from", "2024-03-12", "--to", "2024-03-10"], "--from 2024-03-12 is after --to"),
        (["kpi", "backfill", "--from", "2024-3-x", "--to", "2024-03-10"], "--from '2024-3-x' is not a date"),
        (["leaderboard", "--top", "0"], "0 is not in the range x>=1"),
    ],
)
def test_clear_errors(redis_only, args, message):
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output


def test_an_empty_leaderboard_says_so(redis_only):
    result = invoke("leaderboard")
    assert result.exit_code == 0 and "The leaderboard is empty" in result.output


def test_refresh_of_an_empty_database_builds_the_empty_leaderboard(cli_env):
    result = invoke("kpi", "refresh")
    assert result.exit_code == 0, result.output
    assert "no KPI day to write; the leaderboard written" in result.output


def test_backfill_before_the_start_date_is_refused(cli_env):
    result = invoke("kpi", "backfill", "--from", "2024-02-01", "--to", "2024-03-10")
    assert result.exit_code != 0 and "before the first KPI day 2024-03-01" in result.output
