"""Names written straight into the database with bytes that break JSON, lines or terminals: the
stored payload gives them back exactly, and the log channel writes one line per notification."""

from __future__ import annotations

import json

from ordersys_pipelines.domain.notifications.dispatch import dispatch_pending

HOSTILE_NAME = 'Zoë "}\n{"event":"forged"} \\ \x01\x1b[31m\x7f \u2028\u2029\x85 😀 \ufeff end'
HOSTILE_PRODUCT = "Crème \\\"brûlée\" \t\x0b\x0c\x1c\x1d\x1e 𝄞"


def test_hostile_names_are_carried_exactly_and_each_log_entry_stays_one_line(shop, engine, log_file, config):
    customer = shop.customer(name=HOSTILE_NAME, email="zoe@example.com")
    order = shop.order(customer, "H-1", lines=[("SKU-H", HOSTILE_PRODUCT, 1, 995)])
    shop.enqueue("order_confirmed", [order])
    shop.enqueue("payment_succeeded", [order])

    result = dispatch_pending(engine, config(), claimant="hostile")

    rows = shop.notifications()
    assert result.sent == len(rows) == 2 and result.failed == 0
    for row in rows:
        document = json.loads(row.payload)
        assert document["customer"]["name"] == HOSTILE_NAME
        assert document["order"]["lines"][0]["name"] == HOSTILE_PRODUCT
        assert document["body"] == row.body and HOSTILE_PRODUCT in row.body
    data = log_file.read_bytes()
    assert data.count(b"\n") == 2 and data.endswith(b"\n")
    # One entry per line for readers that split on every Unicode line end too.
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 2
    logged = {entry["notification_id"]: entry for entry in map(json.loads, lines)}
    assert sorted(logged) == [row.id for row in rows]
    assert all(logged[row.id]["body"] == row.body for row in rows)
