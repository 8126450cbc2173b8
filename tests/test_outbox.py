"""The outbox writes one notification per event, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, insert, select

from ordersys_pipelines.db.schema import customers, notifications, orders, refunds
from ordersys_pipelines.domain.notifications.outbox import enqueue_for_orders, enqueue_for_refunds


def _order(conn) -> int:
    customer_id = conn.execute(
        insert(customers).values(email="ann@example.com", name="Ann").returning(customers.c.id)
    ).scalar_one()
    return conn.execute(
        insert(orders)
        .values(order_ref="O-1", customer_id=customer_id, order_date=datetime(2024, 1, 1), total_cents=500,
                status="failed", status_reason="card declined")
        .returning(orders.c.id)
    ).scalar_one()


def test_one_notification_per_order_and_type(engine):
    with engine.begin() as conn:
        order_id = _order(conn)
        assert enqueue_for_orders(conn, "order_failed", [order_id]) == 1
        assert enqueue_for_orders(conn, "order_failed", select(orders.c.id)) == 0
    with engine.connect() as conn:
        row = conn.execute(select(notifications)).one()
    assert (row.type, row.recipient, row.reason, row.status) == ("order_failed", "ann@example.com", "card declined", "pending")
    assert row.dedup_key == f"order:{order_id}:order_failed"


def test_rolled_back_transaction_leaves_no_notification(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        enqueue_for_orders(conn, "order_confirmed", [_order(conn)])
        raise RuntimeError("state change failed")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == 0


def test_unknown_type_is_refused(engine):
    with engine.begin() as conn, pytest.raises(ValueError, match="order_shipped"):
        enqueue_for_orders(conn, "order_teleported", [])


def _refund(conn, order_id: int, **values) -> int:
    return conn.execute(
        insert(refunds)
        .values(order_id=order_id, reference=f"RF-{order_id}", amount_cents=200, type="partial", **values)
        .returning(refunds.c.id)
    ).scalar_one()


def test_refund_notifications_roll_back_with_the_refund(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        refund_id = _refund(conn, _order(conn), status="processed")
        assert enqueue_for_refunds(conn, "refund_processed", [refund_id]) == 1
        raise RuntimeError("refund state change failed")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(notifications)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(refunds)).scalar() == 0


def test_refund_notification_reasons(engine):
    with engine.begin() as conn:
        order_id = _order(conn)
        refund_id = _refund(conn, order_id, status="processed", reason="damaged", last_error="timeout, retried")
        assert enqueue_for_refunds(conn, "refund_processed", select(refunds.c.id)) == 1
        assert enqueue_for_refunds(conn, "refund_failed", [refund_id]) == 1
        assert enqueue_for_refunds(conn, "refund_processed", [refund_id]) == 0
    with engine.connect() as conn:
        rows = conn.execute(select(notifications.c.type, notifications.c.reason, notifications.c.order_id,
                                   notifications.c.dedup_key).order_by(notifications.c.id)).all()
    # A processed refund tells the request's reason, not the error of an attempt that was retried.
    assert rows == [("refund_processed", "damaged", order_id, f"refund:{refund_id}:refund_processed"),
                    ("refund_failed", "timeout, retried", order_id, f"refund:{refund_id}:refund_failed")]
