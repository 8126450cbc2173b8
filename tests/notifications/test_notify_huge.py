"""A huge message (an order of many lines) is stored whole, as it was sent, on every backend."""

from __future__ import annotations

import json

from notify_support import Shop, log_lines
from sqlalchemy import select

from ordersys_pipelines.db.schema import notifications
from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending

LINES = 900  # a body and payload well past 64 KiB (MySQL's TEXT)


def test_an_order_of_many_lines_is_stored_as_sent(engine, config, log_file):
    shop = Shop(engine)
    lines = [(f"SKU-{i:04d}", f"Spare part number {i} with a long descriptive name", 1, 1999) for i in range(LINES)]
    order = shop.order(shop.customer(), "BIG-1", lines=lines)
    shop.enqueue("order_confirmed", [order])

    result = dispatch_pending(engine, config(), claimant="test")

    assert result.sent == 1
    [line] = log_lines(log_file)
    with engine.connect() as conn:
        stored = conn.execute(select(notifications.c.body, notifications.c.payload)).one()
    assert len(line["body"].encode()) > 65_536
    assert stored.body == line["body"]
    document = json.loads(stored.payload)
    assert document["body"] == line["body"] and len(document["order"]["lines"]) == LINES
