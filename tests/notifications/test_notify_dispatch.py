"""Dispatch on both backends through the log channel: render in batches, mark, retry, reclaim."""

from __future__ import annotations

import json
from datetime import timedelta

from notify_support import log_lines
from sqlalchemy import event, update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import customers, notifications
from ordersys_pipelines.domain.notifications import dispatch
from ordersys_pipelines.domain.notifications.dispatch import dispatch_batch, dispatch_pending
from ordersys_pipelines.domain.notifications.outbox import ORDER_TYPES


def test_every_type_is_rendered_sent_and_recorded(shop, engine, log_file, config):
    customer = shop.customer(name="Zoë Ångström", email="zoe@example.com")
    order = shop.order(customer, "A-1", lines=[("SKU-1", "Crème brûlée", 2, 61725), ("SKU-2", "Spoon", 1, 0)],
                       reason="card_expired")
    refund = shop.refund(order, 2999, "RF-1", status="failed", last_error="gateway timeout")
    for notification_type in ORDER_TYPES:
        shop.enqueue(notification_type, [order])
    shop.enqueue("refund_processed", [refund])
    shop.enqueue("refund_failed", [refund])

    result = dispatch_pending(engine, config(), claimant="test-run")

    rows = shop.notifications()
    assert result.sent == len(rows) == 9 and result.failed == result.retried == 0
    assert {(t, c) for t, c, *_ in result.rows()} == {(row.type, "log") for row in rows}
    for row in rows:
        assert (row.status, row.attempts, row.channel, row.claimed_by) == ("sent", 1, "log", None)
        assert row.sent_at is not None and "A-1" in row.subject and row.body.startswith("Hello Zoë Ångström,")
        document = json.loads(row.payload)
        assert document["event_id"] == row.dedup_key and document["order"]["total_cents"] == 123450
        assert document["order"]["lines"][0] == {"sku": "SKU-1", "name": "Crème brûlée", "quantity": 2,
                                                 "unit_price_cents": 61725, "line_total_cents": 123450}
    by_type = {row.type: row for row in rows}
    assert "Reason: card_expired" in by_type["payment_failed"].body
    assert "€29.99" in by_type["refund_processed"].subject
    assert "Reason: gateway timeout" in by_type["refund_failed"].body
    assert "Reason" not in by_type["refund_processed"].body.replace("Reason: damaged in transit", "")
    logged = log_lines(log_file)
    assert sorted(line["notification_id"] for line in logged) == [row.id for row in rows]
    assert {line["subject"] for line in logged} == {row.subject for row in rows}
    # Nothing is due any more: a second dispatch claims nothing and sends nothing.
    assert dispatch_pending(engine, config(), claimant="again").claimed == 0


def test_a_batch_is_loaded_with_a_fixed_number_of_queries(shop, engine, config):
    # An ANALYZE owed to earlier tests' rows may not change the count (nor may a slow send: the
    # conftest flushes marks by count alone): only the statements a batch's size could multiply.
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if not statement.startswith("ANALYZE"):
            statements.append(statement)

    def run(orders: int) -> int:
        shop.enqueue("order_shipped", shop.orders(orders, prefix=f"Q{orders}", email=f"q{orders}@example.com"))
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            result = dispatch_batch(engine, config(), claimant=f"run-{orders}", limit=100)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert result.sent == orders
        return len(statements)

    assert run(3) == run(40)


def test_marks_are_flushed_once_flush_seconds_of_sending_passed(shop, engine, config, monkeypatch):
    """With no time to spare (FLUSH_SECONDS 0) every message's mark is written before the next
    message goes out: a run killed then repeats one message at most."""
    monkeypatch.setattr(dispatch, "FLUSH_SECONDS", 0.0)
    shop.enqueue("order_shipped", shop.orders(4))
    marks: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.startswith("UPDATE notifications") and "sent_at" in statement:
            marks.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert dispatch_batch(engine, config(), claimant="run", limit=10).sent == 4
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(marks) == 4
    assert {row.status for row in shop.notifications()} == {"sent"}


def test_batches_are_claimed_up_to_the_limit(shop, engine, config):
    shop.enqueue("order_delivered", shop.orders(7))
    first = dispatch_batch(engine, config(), claimant="run-a", limit=5)
    assert (first.claimed, first.sent) == (5, 5)
    rest = dispatch_pending(engine, config(), claimant="run-b", limit=5)
    assert (rest.claimed, rest.sent, rest.batches) == (2, 2, 1)


def test_a_crashed_runs_sending_rows_are_taken_again_once_the_lease_lapsed(shop, engine, config):
    shop.enqueue("order_confirmed", shop.orders(4))
    rows = shop.notifications()
    crashed, held = [r.id for r in rows[:2]], [r.id for r in rows[2:]]
    with engine.begin() as conn:  # a run claimed them, marked them sending and died
        conn.execute(update(notifications).where(notifications.c.id.in_(crashed)).values(
            status="sending", claimed_by="dead-run", claim_expires_at=utcnow() - timedelta(seconds=1)))
        conn.execute(update(notifications).where(notifications.c.id.in_(held)).values(
            status="sending", claimed_by="live-run", claim_expires_at=utcnow() + timedelta(minutes=5)))

    result = dispatch_pending(engine, config(), claimant="next-run")

    assert result.sent == 2
    states = {row.id: (row.status, row.claimed_by) for row in shop.notifications()}
    assert [states[i] for i in crashed] == [("sent", None)] * 2
    assert [states[i] for i in held] == [("sending", "live-run")] * 2


def test_an_unknown_customer_channel_fails_at_once(shop, engine, config):
    order = shop.orders(1, channel="carrier-pigeon")[0]
    shop.enqueue("order_shipped", [order])
    result = dispatch_pending(engine, config(), claimant="run")
    row = shop.notifications()[0]
    assert (result.failed, row.status, row.attempts) == (1, "failed", 1)
    assert row.last_error == "unknown channel 'carrier-pigeon'; valid: log, email, webhook"


def test_a_template_that_fails_marks_only_its_notifications_failed(shop, engine, tmp_path, config):
    (tmp_path / "order_shipped.j2").write_text(
        "{% block subject %}Shipped {{ order_ref }}{% endblock %}{% block body %}{{ tracking_url }}{% endblock %}")
    orders = shop.orders(2)
    shop.enqueue("order_shipped", orders)
    shop.enqueue("order_confirmed", orders)

    result = dispatch_pending(engine, config(templates_dir=str(tmp_path)), claimant="run")

    assert (result.sent, result.failed) == (2, 2)
    by_type = {}
    for row in shop.notifications():
        by_type.setdefault(row.type, []).append(row)
    assert [r.status for r in by_type["order_confirmed"]] == ["sent", "sent"]
    for row in by_type["order_shipped"]:
        assert row.status == "failed" and row.subject is None
        assert row.last_error.startswith("template 'order_shipped.j2' line 1: missing field 'tracking_url'")


def test_the_channel_is_the_customers_override_else_the_setting(shop, engine, config):
    default_customer = shop.customer(email="a@example.com")
    log_customer = shop.customer(email="b@example.com", channel="log")
    shop.enqueue("order_shipped", [shop.order(default_customer, "D-1"), shop.order(log_customer, "L-1")])
    # The default channel (e-mail) points at a port nothing listens on: those are retried.
    result = dispatch_pending(engine, config(channel="email", smtp_port=9, max_attempts=5, backoff_seconds=60),
                              claimant="run")
    assert sorted((t, c, s, r, f) for t, c, s, r, f in result.rows()) == [
        ("order_shipped", "email", 0, 1, 0), ("order_shipped", "log", 1, 0, 0)]
    with engine.begin() as conn:  # the customer's override was chosen at the first attempt and kept
        conn.execute(update(customers).values(notify_channel="webhook"))
    assert [r.channel for r in shop.notifications()] == ["email", "log"]
