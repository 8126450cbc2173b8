"""`ordersys notifications report` and `send`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.settings import Settings, SettingsError


@pytest.fixture
def history(settings, shop, engine, monkeypatch):
    """Three sent, one failed, one pending notification of two orders."""
    customer = shop.customer()
    first = shop.order(customer, "R-1", lines=[("SKU-1", "Widget", 1, 123450)])
    second = shop.order(customer, "R-2", lines=[("SKU-2", "Gadget", 2, 250)])
    for notification_type in ("payment_succeeded", "order_confirmed", "order_shipped"):
        shop.enqueue(notification_type, [first])
    shop.enqueue("order_confirmed", [second])
    shop.enqueue("order_delivered", [second])
    assert CliRunner().invoke(main, ["notifications", "send"]).exit_code == 0
    ids = [row.id for row in shop.notifications()]
    with engine.begin() as conn:
        conn.execute(update(notifications).where(notifications.c.id == ids[3])
                     .values(status="failed", sent_at=None, last_error="550 User unknown"))
        conn.execute(update(notifications).where(notifications.c.id == ids[4])
                     .values(status="pending", sent_at=None))
    return ids


def _run(*args: str):
    return CliRunner().invoke(main, ["notifications", *args])


def test_report_lists_the_history_and_a_summary(history):
    result = _run("report")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "order", "type", "status", "channel", "total", "sent", "at", "created", "at"]
    rows = [line.split() for line in lines[2:7]]
    assert [row[:6] for row in rows] == [
        [str(history[4]), "R-2", "order_delivered", "pending", "log", "€5.00"],
        [str(history[3]), "R-2", "order_confirmed", "failed", "log", "€5.00"],
        [str(history[2]), "R-1", "order_shipped", "sent", "log", "€1,234.50"],
        [str(history[1]), "R-1", "order_confirmed", "sent", "log", "€1,234.50"],
        [str(history[0]), "R-1", "payment_succeeded", "sent", "log", "€1,234.50"],
    ]
    assert rows[0][6] == "-" and len(rows[2]) == 10  # pending: not sent; sent: date and time
    summary = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in lines[8:]}
    assert summary == {"total": "5", "sent": "3", "failed": "1", "pending": "1", "success rate": "75.0%"}


@pytest.mark.parametrize(
    ("args", "expected_ids", "summary"),
    [
        (("--type", "order_confirmed"), [3, 1], "total         2"),
        (("--status", "sent"), [2, 1, 0], "success rate  100.0%"),
        (("--order", "R-2"), [4, 3], "failed        1"),
        (("--limit", "1"), [4], "(showing the newest 1 of 5)"),
    ],
)
def test_report_filters(history, args, expected_ids, summary):
    result = _run("report", *args)
    assert result.exit_code == 0, result.output
    shown = [int(line.split()[0]) for line in result.output.splitlines()[2:] if line[:1].isdigit()]
    assert shown == [history[i] for i in expected_ids]
    assert summary in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--type", "order_teleported"), "Error: unknown type 'order_teleported'; valid: order_confirmed, "
                                         "order_failed, payment_succeeded, payment_failed, order_cancelled, "
                                         "order_shipped, order_delivered, refund_processed, refund_failed, "
                                         "payment_returned"),
        (("--status", "lost"), "Error: unknown status 'lost'; valid: pending, sending, sent, failed"),
        (("--order", "NOPE"), "Error: no order 'NOPE'"),
    ],
)
def test_report_refuses_unknown_filter_values(settings, args, message):
    result = _run("report", *args)
    assert result.exit_code == 1 and result.output.strip() == message


def test_send_dispatches_until_nothing_is_due(settings, shop, monkeypatch):
    shop.enqueue("order_confirmed", shop.orders(3))
    monkeypatch.setenv("ORDERSYS_NOTIFY_BATCH_SIZE", "2")
    result = _run("send")
    assert result.exit_code == 0, result.output
    assert "order_confirmed  log             3          0         0" in result.output
    assert "sent 3, retried 0, failed 0 in 2 batches" in result.output
    assert [row.status for row in shop.notifications()] == ["sent"] * 3


def test_send_reports_what_waits_for_a_retry(settings, shop, monkeypatch):
    shop.enqueue("order_confirmed", shop.orders(2))
    monkeypatch.setenv("ORDERSYS_NOTIFY_CHANNEL", "email")
    monkeypatch.setenv("ORDERSYS_SMTP_PORT", "9")  # nothing listens there
    result = _run("send")
    assert result.exit_code == 0, result.output
    assert "sent 0, retried 2, failed 0" in result.output
    assert "2 notifications wait for a later attempt (0 due now)" in result.output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ORDERSYS_NOTIFY_CHANNEL": "sms"}, "ORDERSYS_NOTIFY_CHANNEL='sms' is not a channel; valid: log, email, webhook"),
        ({"ORDERSYS_NOTIFY_CHANNEL": "webhook"}, "needs ORDERSYS_NOTIFY_WEBHOOK_URL"),
        ({"ORDERSYS_NOTIFY_BACKOFF_SECONDS": "-1"}, "must be at least 0"),
    ],
)
def test_notification_settings_are_checked(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()
