"""The webhook channel against a real local HTTP server, and operator alerts."""

from __future__ import annotations

import json

import pytest
from notify_support import free_port, log_lines
from sqlalchemy import update

from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications import dispatch
from ordersys_pipelines.domain.notifications.channels import SIGNATURE_HEADER, ChannelUnavailable
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending
from ordersys_pipelines.domain.notifications.operator import notify_operator
from ordersys_pipelines.domain.payments.signing import verify
from ordersys_pipelines.resources.notifier import NotifierResource

SECRET = "hook-secret"


def test_a_customer_on_the_webhook_channel_gets_signed_json(shop, engine, webhook_server, config):
    customer = shop.customer(name="Łukasz Żółć", email="lukasz@example.com", channel="webhook")
    order = shop.order(customer, "W-1", lines=[("SKU-1", "Kawa ☕", 3, 1999)], status="failed",
                       reason="insufficient_funds")
    shop.enqueue("payment_failed", [order])
    shop.enqueue("order_failed", shop.orders(1, prefix="L", email="ann@example.com"))  # default: log

    result = dispatch_pending(engine, config(webhook_url=webhook_server.url, webhook_secret=SECRET),
                              claimant="run")

    assert sorted(result.rows()) == [("order_failed", "log", 1, 0, 0), ("payment_failed", "webhook", 1, 0, 0)]
    [request] = webhook_server.requests
    row = next(r for r in shop.notifications() if r.type == "payment_failed")
    headers = request["headers"]
    assert request["path"] == "/hooks/ordersys" and headers["Content-Type"] == "application/json; charset=utf-8"
    verify(request["body"], headers[SIGNATURE_HEADER], SECRET, tolerance_seconds=60)  # raises if invalid
    assert headers["Idempotency-Key"] == row.dedup_key and headers["Ordersys-Event"] == "payment_failed"
    document = json.loads(request["body"])
    assert document["type"] == "payment_failed" and document["notification_id"] == row.id
    assert document["customer"] == {"name": "Łukasz Żółć", "email": "lukasz@example.com"}
    assert document["order"]["ref"] == "W-1" and document["order"]["total_cents"] == 5997
    assert document["order"]["lines"] == [{"sku": "SKU-1", "name": "Kawa ☕", "quantity": 3,
                                           "unit_price_cents": 1999, "line_total_cents": 5997}]
    assert document["reason"] == "insufficient_funds" and document["refund"] is None
    assert document["subject"] == row.subject == "Payment for order W-1 failed"
    assert request["body"] == row.payload.encode()  # the stored payload is what was sent


def test_a_tampered_body_does_not_verify(shop, engine, webhook_server, config):
    shop.enqueue("order_shipped", shop.orders(1))
    dispatch_pending(engine, config(channel="webhook", webhook_url=webhook_server.url, webhook_secret=SECRET),
                     claimant="run")
    [request] = webhook_server.requests
    with pytest.raises(ValueError, match="does not match"):
        verify(request["body"].replace(b"O-0000", b"O-9999"), request["headers"][SIGNATURE_HEADER], SECRET, 60)


def test_webhook_5xx_is_retried_and_4xx_fails_with_the_reply(shop, engine, webhook_server, config):
    webhook_server.statuses += [(503, "maintenance"), (422, '{"error": "unknown order"}')]
    shop.enqueue("order_delivered", shop.orders(1))
    settings = config(channel="webhook", webhook_url=webhook_server.url, max_attempts=5)

    result = dispatch_pending(engine, settings, claimant="run")

    assert (result.retried, result.failed, result.sent) == (1, 1, 0)
    row = shop.notifications()[0]
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_error == (f'HTTP 422 Unprocessable Entity from {webhook_server.url}: {{"error": "unknown order"}}')
    assert len(webhook_server.requests) == 2


def test_webhook_nobody_listening_is_transient(shop, engine, config):
    shop.enqueue("order_delivered", shop.orders(2))
    url = f"http://127.0.0.1:{free_port()}/hook"
    result = dispatch_pending(engine, config(channel="webhook", webhook_url=url, max_attempts=2), claimant="run")
    assert (result.retried, result.failed) == (2, 2)
    assert all(f"webhook {url} unavailable" in row.last_error for row in shop.notifications())


def test_operator_alert_by_email(smtp_server, config):
    settings = config(channel="email", smtp_port=smtp_server.port, operator_email="ops@example.com")
    assert notify_operator(NotifierResource(**settings.__dict__), "Run failed: notification_dispatch",
                           "Step dispatch_notifications failed.\nSee the run in the UI.") == "email"
    [message] = smtp_server.messages
    assert message["To"].addresses[0].addr_spec == "ops@example.com"
    assert message["Subject"] == "Run failed: notification_dispatch"
    assert "See the run in the UI." in message.get_content()


def test_operator_alert_falls_back_to_a_log_line_without_an_address(config, log_file):
    assert notify_operator(config(channel="email"), "Run failed", "details") == "log"
    [line] = log_lines(log_file)
    assert (line["type"], line["subject"], line["body"]) == ("operator_alert", "Run failed", "details")


def test_operator_alert_by_webhook_and_a_failed_alert_raises(webhook_server, config, caplog):
    settings = config(channel="webhook", webhook_url=webhook_server.url, webhook_secret=SECRET)
    assert notify_operator(settings, "Run failed", "details") == "webhook"
    assert json.loads(webhook_server.requests[0]["body"])["type"] == "operator_alert"
    down = config(channel="webhook", webhook_url=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ChannelUnavailable, match="unavailable"):
        notify_operator(down, "Run failed", "details")
    assert "operator alert 'Run failed' could not be sent by webhook" in caplog.text


def test_rows_whose_claim_went_to_another_run_are_not_sent(shop, engine, webhook_server, config, monkeypatch):
    """A run whose lease lapsed mid-batch (and whose rows another run took) stops sending them."""
    monkeypatch.setattr(dispatch, "FLUSH_EVERY", 1)  # check the claim before every message
    monkeypatch.setattr(dispatch, "RENEW_AFTER", 0)
    shop.enqueue("order_shipped", shop.orders(4))
    ids = [row.id for row in shop.notifications()]

    def steal_the_rest(request):
        if len(webhook_server.requests) == 1:
            with engine.begin() as conn:
                conn.execute(update(notifications).where(notifications.c.id.in_(ids[1:]))
                             .values(claimed_by="other-run"))

    webhook_server.on_request = steal_the_rest
    result = dispatch_pending(engine, config(channel="webhook", webhook_url=webhook_server.url),
                              claimant="slow-run", max_batches=1)

    assert (result.sent, result.lost, len(webhook_server.requests)) == (1, 3, 1)
    rows = shop.notifications()
    assert (rows[0].status, rows[0].claimed_by) == ("sent", None)
    assert [(r.status, r.claimed_by) for r in rows[1:]] == [("sending", "other-run")] * 3
