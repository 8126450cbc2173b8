"""`ordersys refund` and `ordersys refunds process|show`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from refunds_support import gateway_refund_calls, make_order, refund_rows

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.refunds.amounts import AmountError, parse_amount


@pytest.mark.parametrize(("text", "cents"), [("12.50", 1_250), ("0.01", 1), ("7", 700), ("0.29", 29),
                                             (" 3.1 ", 310), ("-2.00", -200), (".5", 50), ("5.", 500)])
def test_amounts_parse_exactly(text, cents):
    assert parse_amount(text) == cents


@pytest.mark.parametrize(("text", "message"), [("12.505", "more than 2 decimals"), ("abc", "not a number"),
                                               ("NaN", "not a finite number"), ("", "not a number"),
                                               ("1e2", "not a number"), ("1_0", "not a number"),
                                               ("１２", "not a number"), ("١٢", "not a number"),
                                               ("+3", "not a number"), ("1,000.00", "not a number"),
                                               ("inf", "not a finite number"),
                                               ("1000000000", "larger than 999999999.99")])
def test_bad_amounts_are_named(text, message):
    with pytest.raises(AmountError, match=message):
        parse_amount(text)


@pytest.fixture
def cli(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("ORDERSYS_GATEWAY_REFUND_FAILURE_RATE", "0")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args))


def test_refund_command_requests_refuses_and_repeats(cli, settings):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=5_000)
    ok = cli("refund", "O-1", "--amount", "12.50", "--reference", "K-1", "--reason", "scratched")
    assert ok.exit_code == 0, ok.output
    assert "refund requested: #1 K-1 for order O-1: 12.50 EUR (partial), pending" in ok.output
    again = cli("refund", "O-1", "--amount", "12.50", "--reference", "K-1")
    assert again.exit_code == 0 and "existing refund returned" in again.output

    conflict = cli("refund", "O-1", "--amount", "12.51", "--reference", "K-1")
    assert conflict.exit_code == 1 and "'K-1' is already used by refund #1" in conflict.output
    too_much = cli("refund", "O-1", "--amount", "37.51", "--reference", "K-2")
    assert too_much.exit_code == 1
    assert "refund refused: amount 37.51 exceeds the 37.50 left to refund on order O-1" in too_much.output
    assert "recorded as rejected refund #2" in too_much.output
    precise = cli("refund", "O-1", "--amount", "1.005", "--reference", "K-3")
    assert precise.exit_code == 1 and "more than 2 decimals" in precise.output
    for args in ((), ("--amount", "1", "--full")):
        usage = cli("refund", "O-1", "--reference", "K-4", *args)
        assert usage.exit_code == 2 and "either --amount AMOUNT or --full" in usage.output
    full = cli("refund", "O-1", "--full", "--reference", "K-5")
    assert full.exit_code == 0 and "37.50 EUR (full), pending" in full.output
    unknown = cli("refund", "NOPE", "--full", "--reference", "K-6")
    assert unknown.exit_code == 1 and "order NOPE does not exist" in unknown.output
    assert [(r.reference, r.status) for r in refund_rows(engine)] == [("K-1", "pending"), ("K-2", "rejected"),
                                                                      ("K-5", "pending")]


def test_refunds_process_runs_until_nothing_is_due_and_show_lists_them(cli, settings):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=5_000)
    for i, amount in enumerate(("10.00", "15.00", "25.00")):
        assert cli("refund", "O-1", "--amount", amount, "--reference", f"K-{i}").exit_code == 0
    result = cli("refunds", "process", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "2 run(s): 3 processed, 0 retried, 0 failed, 0 skipped, 50.00 EUR refunded" in result.output
    assert len(gateway_refund_calls(engine)) == 3
    idle = cli("refunds", "process")
    assert "0 run(s)" in idle.output

    shown = cli("refunds", "show", "O-1")
    assert shown.exit_code == 0
    assert "order O-1: total 50.00 EUR, refund state refunded" in shown.output
    assert shown.output.count("processed") >= 3 and "K-2" in shown.output and "25.00" in shown.output
    assert cli("refunds", "show", "NOPE").exit_code == 1


def test_refund_amounts_are_read_as_import_amounts_are(cli, settings):
    engine = get_engine(settings.database_url)
    make_order(engine, total_cents=50_000)
    for text in ("1e2", "1_0", "１２", "+5"):
        refused = cli("refund", "O-1", "--amount", text, "--reference", "K-odd")
        assert refused.exit_code == 1 and f"amount '{text}' is not a number" in refused.output
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM refunds").scalar() == 0
