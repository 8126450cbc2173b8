"""`ordersys status` against a prepared database: known backlog, work of the last hour, failures
and rejects; every figure and one-line cause checked, on every backend."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from click.testing import CliRunner
from imports_support import HEADER, run_import
from sqlalchemy import insert
from workflow_helpers import add_order, add_products

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications, order_events, orders, payment_callbacks, refunds
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError

GOOD_FILE = HEADER + (
    "A-1,2024-03-01T10:00:00,ann@example.com,Ann,SKU-1,Widget,1,2.50\n"
    "A-2,2024-03-01T11:00:00,bob@example.com,Bob,SKU-1,Widget,-3,2.50\n"
    "A-3,2024-03-01T12:00:00,cy@example.com,Cy,SKU-1,Widget,1,abc\n"
)


def _insert_each(conn, table, rows: list[dict]) -> None:
    for row in rows:  # rows of different columns: one statement each
        conn.execute(insert(table).values(**row))


def _stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["stage"] == name)


@pytest.fixture
def prepared(settings, tmp_path, monkeypatch):
    """A database with a known state at every stage, and an inbox with one waiting file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    engine = get_engine(settings.database_url)
    files = tmp_path / "files"
    files.mkdir()
    run_import(engine, files, GOOD_FILE, name="shop-march.csv")
    with pytest.raises(CsvFormatError):
        run_import(engine, files, "order_ref,order_date,customer_email\nX,2024-03-01,a@b.c\n", name="no-prices.csv")

    now = utcnow()
    hour_ago, two_hours_ago = now - timedelta(minutes=50), now - timedelta(hours=2)
    waiting = settings.inbox / "waiting.csv"
    waiting.write_text(HEADER)
    os.utime(waiting, (now.timestamp() - 600, (now - timedelta(minutes=30)).replace(tzinfo=None).timestamp()))
    (settings.inbox / "half-written.csv.part").write_text(HEADER)

    with engine.begin() as conn:
        add_products(conn, {"SKU-9": 100})
        ids = {ref: add_order(conn, ref, [("SKU-9", 1)]) for ref in ("C-1", "C-2", "C-3", "R-1", "P-1", "F-1", "F-2",
                                                                     "F-3", "D-1")}
        conn.execute(orders.update().where(orders.c.order_ref == "C-1").values(status_changed_at=two_hours_ago))
        conn.execute(orders.update().where(orders.c.order_ref == "R-1").values(status="reserved"))
        conn.execute(orders.update().where(orders.c.order_ref.in_(["P-1", "D-1"])).values(status="awaiting_payment"))
        conn.execute(orders.update().where(orders.c.order_ref.in_(["F-1", "F-2"]))
                     .values(status="failed", status_reason="payment declined: insufficient_funds"))
        conn.execute(orders.update().where(orders.c.order_ref == "F-3")
                     .values(status="failed", status_reason="out of stock: SKU-9\nneeded 1, had 0\x07"))
        _insert_each(conn, order_events, [
            {"order_id": ids["P-1"], "from_status": "reserved", "to_status": "awaiting_payment", "created_at": hour_ago},
            {"order_id": ids["D-1"], "from_status": "reserved", "to_status": "awaiting_payment", "created_at": hour_ago},
            {"order_id": ids["F-3"], "from_status": "created", "to_status": "failed", "created_at": hour_ago},
            # Older than an hour, and settlement's work, not the workflow's:
            {"order_id": ids["F-1"], "from_status": "created", "to_status": "reserved", "created_at": two_hours_ago},
            {"order_id": ids["F-1"], "from_status": "awaiting_payment", "to_status": "failed", "created_at": hour_ago},
        ])
        _insert_each(conn, payment_callbacks, [
            {"event_id": "ev-1", "payload": "{}", "status": "pending", "available_at": now - timedelta(minutes=10)},
            {"event_id": "ev-2", "payload": "{}", "status": "pending", "available_at": now - timedelta(minutes=3)},
            {"event_id": "ev-3", "payload": "{}", "status": "pending", "available_at": now + timedelta(hours=1)},
            {"event_id": "ev-4", "payload": "{}", "status": "rejected", "reason": "signature does not match",
             "received_at": hour_ago, "processed_at": hour_ago},
            {"event_id": "ev-5", "payload": "{}", "status": "applied", "processed_at": hour_ago},
        ])
        _insert_each(conn, refunds, [
            {"order_id": ids["D-1"], "reference": "rf-pending", "amount_cents": 100, "type": "partial",
             "status": "pending", "requested_at": two_hours_ago, "next_attempt_at": now + timedelta(minutes=5)},
            {"order_id": ids["D-1"], "reference": "rf-failed", "amount_cents": 100, "type": "partial",
             "status": "failed", "last_error": "gateway timeout after 10 s", "next_attempt_at": hour_ago},
            {"order_id": ids["D-1"], "reference": "rf-refused", "amount_cents": 100, "type": "partial",
             "status": "rejected", "last_error": "order D-1 is awaiting_payment, not refundable",
             "requested_at": hour_ago},
        ])
        _insert_each(conn, notifications, [
            {"type": "order_finalized", "dedup_key": "n-1", "status": "pending", "next_attempt_at": two_hours_ago,
             "created_at": two_hours_ago},
            {"type": "order_finalized", "dedup_key": "n-2", "status": "pending", "next_attempt_at": now + timedelta(hours=1)},
            {"type": "order_failed", "dedup_key": "n-3", "status": "failed", "next_attempt_at": hour_ago,
             "last_error": "SMTP 550 mailbox unavailable"},
            {"type": "order_failed", "dedup_key": "n-4", "status": "sent", "sent_at": hour_ago},
            {"type": "order_failed", "dedup_key": "n-5", "status": "sent", "sent_at": two_hours_ago},
        ])
    return settings


def _status(*args: str) -> str:
    result = CliRunner().invoke(main, ["status", *args], catch_exceptions=False, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    return result.output


def test_status_figures_match_the_database(prepared):
    report = json.loads(_status("--json"))

    imports = _stage(report, "import")
    assert (imports["backlog"], imports["done_last_hour"]) == (1, 1)  # waiting.csv; shop-march.csv completed
    assert 1700 <= imports["oldest_waiting_seconds"] <= 1900  # the inbox file, 30 minutes old
    workflow = _stage(report, "workflow")
    # Waiting: C-1..3, R-1 and A-1 (imported from shop-march.csv); done: P-1, D-1 and F-3.
    assert (workflow["backlog"], workflow["done_last_hour"]) == (5, 3)
    assert 7100 <= workflow["oldest_waiting_seconds"] <= 7300  # C-1, two hours
    settlement = _stage(report, "settlement")
    assert (settlement["backlog"], settlement["done_last_hour"]) == (2, 2)
    assert 500 <= settlement["oldest_waiting_seconds"] <= 700
    assert settlement["note"] == "2 orders awaiting payment"
    refund_stage = _stage(report, "refunds")
    assert (refund_stage["backlog"], refund_stage["note"]) == (1, "0 due now")
    notify = _stage(report, "notifications")
    assert (notify["backlog"], notify["done_last_hour"], notify["note"]) == (2, 2, "1 due now")
    analytics = _stage(report, "analytics")
    assert analytics["backlog"] is None and not report["runs_read"]
    assert "no Dagster instance" in report["instance"]

    causes = {(f["kind"], f["cause"]): (f["count"], f["subject"]) for f in report["failures"]}
    files = [f for f in report["failures"] if f["kind"] == "import"]
    assert [f["subject"] for f in files] == ["no-prices.csv"]
    assert "unit_price" in files[0]["cause"] or "missing" in files[0]["cause"]
    assert causes[("order", "payment declined: insufficient_funds")] == (2, "F-1")
    assert causes[("order", "out of stock: SKU-9")] == (1, "F-3")  # first line only, control byte gone
    assert causes[("refund", "gateway timeout after 10 s")] == (1, "rf-failed")
    assert causes[("refund request", "order D-1 is awaiting_payment, not refundable")] == (1, "rf-refused")
    assert causes[("notification", "SMTP 550 mailbox unavailable")][0] == 1
    assert causes[("callback", "signature does not match")] == (1, "ev-4")

    latest = {f["name"]: f for f in report["files"]}
    assert (latest["shop-march.csv"]["status"], latest["shop-march.csv"]["rejected"]) == ("completed", 2)
    assert latest["no-prices.csv"]["status"] == "failed"


def test_status_prints_the_causes_in_one_line(prepared):
    output = _status()
    for text in ("no-prices.csv", "payment declined: insufficient_funds", "out of stock: SKU-9",
                 "SMTP 550 mailbox unavailable", "signature does not match", "shop-march.csv",
                 "ordersys imports show FILE", "no Dagster instance"):
        assert text in output, text
    assert "needed 1, had 0" not in output


def test_a_failed_file_imported_again_drops_out(prepared, tmp_path):
    engine = get_engine(prepared.database_url)
    before = json.loads(_status("--json"))
    assert any(f["subject"] == "no-prices.csv" for f in before["failures"])
    from sqlalchemy import update

    from ordersys_pipelines.db.schema import import_files

    with engine.begin() as conn:  # what a successful re-import of that content records
        conn.execute(update(import_files).where(import_files.c.original_name == "no-prices.csv")
                     .values(status="completed", error=None))
    after = json.loads(_status("--json"))
    assert not any(f["subject"] == "no-prices.csv" for f in after["failures"])


def test_status_on_a_database_without_schema_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERSYS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code != 0
    assert "ordersys db upgrade" in result.output


def test_an_open_notification_channel_is_listed_with_its_cause(prepared):
    from ordersys_pipelines.db.schema import notification_channel_state

    engine = get_engine(prepared.database_url)
    with engine.begin() as conn:
        conn.execute(insert(notification_channel_state).values(
            channel="webhook", state="open", reason="connection refused\nby 127.0.0.1:9", failures=5,
            deferred=40, left_pending=120, opened_at=utcnow()))
        conn.execute(insert(notification_channel_state).values(channel="email", state="closed", failures=0))
    report = json.loads(_status("--json"))
    channels = [f for f in report["failures"] if f["kind"] == "channel"]
    assert [(f["subject"], f["count"]) for f in channels] == [("webhook", 5)]
    assert channels[0]["cause"] == "down: connection refused; 120 notifications wait"  # first line
    assert "120 notifications wait" in _status()
