"""One bad row never stops a dispatch: poison rows written straight into the database."""

from __future__ import annotations

from poison_support import poison_timestamp
from sqlalchemy import update

from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending


def test_a_notification_whose_order_cannot_be_read_fails_alone(shop, engine, config):
    orders = shop.orders(5)
    shop.enqueue("order_confirmed", orders)
    with engine.begin() as conn:
        poison_timestamp(conn, "orders", "order_date", orders[3])
    result = dispatch_pending(engine, config(), claimant="test-run")
    rows = {row.order_id: row for row in shop.notifications()}
    assert {oid: rows[oid].status for oid in orders} == {**dict.fromkeys(orders, "sent"), orders[3]: "failed"}
    assert rows[orders[3]].last_error.startswith("bad data in notification dispatch: ")
    assert rows[orders[3]].claimed_by is None and rows[orders[3]].attempts == 1
    assert (result.sent, result.failed) == (4, 1)


def test_a_message_the_channel_cannot_take_fails_alone(shop, engine, config, webhook_server):
    orders = shop.orders(3)
    shop.enqueue("order_confirmed", orders)
    with engine.begin() as conn:
        # Rendered once, its JSON document lost since (a hand edit): nothing to POST.
        conn.execute(update(notifications).where(notifications.c.order_id == orders[0])
                     .values(subject="Your order", body="Hello\n", payload=None, channel="webhook"))
        conn.execute(update(notifications).values(channel="webhook"))
    result = dispatch_pending(engine, config(webhook_url=webhook_server.url), claimant="test-run")
    rows = {row.order_id: row for row in shop.notifications()}
    assert [rows[oid].status for oid in orders] == ["failed", "sent", "sent"]
    assert rows[orders[0]].last_error.startswith("bad data in notification dispatch: AttributeError")
    assert len(webhook_server.requests) == 2 and (result.sent, result.failed) == (2, 1)
