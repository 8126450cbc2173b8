"""Operator transitions: cancel, ship, deliver — in bulk, with illegal and unknown refs reported."""

from __future__ import annotations

from sqlalchemy import func, select
from workflow_helpers import add_order, add_products, statuses, stock

from ordersys_pipelines.db.schema import notifications, order_events
from ordersys_pipelines.domain import inventory
from ordersys_pipelines.domain.orders.operations import cancel, deliver, ship


def _orders(conn):
    add_products(conn, {"A": 10})
    refs = {}
    for status in ("created", "reserved", "awaiting_payment", "finalized", "failed", "shipped"):
        refs[status] = add_order(conn, f"O-{status}", [("A", 2)], status=status)
    # What reservation would have done for the orders that hold stock.
    inventory.add_reserved(conn, {1: 4})
    return refs


def test_cancel_releases_stock_and_reports_the_rest(engine):
    with engine.begin() as conn:
        _orders(conn)
        outcome = cancel(conn, ["O-created", "O-reserved", "O-awaiting_payment", "O-finalized", "O-failed", "O-nope",
                                "O-created"], run_id=None)
    assert outcome.changed == ["O-awaiting_payment", "O-created", "O-reserved"]
    assert [(r.order_ref, r.current) for r in outcome.refused] == [("O-failed", "failed"), ("O-finalized", "finalized")]
    assert "O-finalized: cannot go from finalized to cancelled" in str(outcome.refused[1])
    assert outcome.unknown == ["O-nope"]
    with engine.connect() as conn:
        assert stock(conn) == {"A": (10, 0)}
        assert statuses(conn)["O-reserved"] == "cancelled"
        assert conn.execute(select(func.count()).select_from(notifications)
                            .where(notifications.c.type == "order_cancelled")).scalar() == 3
        assert conn.execute(select(func.count()).select_from(order_events)).scalar() == 3


def test_ship_and_deliver_move_finalized_orders_on(engine):
    with engine.begin() as conn:
        _orders(conn)
        shipped = ship(conn, ["O-finalized", "O-created"])
        assert shipped.changed == ["O-finalized"] and shipped.refused[0].requested == "shipped"
        assert deliver(conn, ["O-finalized", "O-shipped"]).changed == ["O-finalized", "O-shipped"]
        refused = deliver(conn, ["O-finalized"]).refused
        assert [(r.current, r.requested) for r in refused] == [("delivered", "delivered")]
        kinds = sorted(conn.execute(select(notifications.c.type)).scalars())
    assert kinds == ["order_delivered", "order_delivered", "order_shipped"]
