"""The loader's payment state looks up an unpaid order's own declines through the payment_ref
index on PostgreSQL, per row, instead of hashing every decline of the table once per batch: a
scan that grows with the callbacks (19 ms per batch of 1,000 at 28,000 of them)."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import event, insert, select, text

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import customers, notifications, orders, payment_callbacks
from ordersys_pipelines.domain.notifications.context import load_rows

FAILED = 400  # unpaid orders, each with a declined callback; as many paid ones with approvals


def _shop(conn) -> None:
    customer = conn.execute(insert(customers).values(name="Ann", email="ann@example.com")
                            .returning(customers.c.id)).scalar_one()
    conn.execute(insert(orders), [
        {"order_ref": f"P-{i}", "customer_id": customer, "order_date": datetime(2024, 5, 1), "total_cents": 100,
         "payment_ref": f"pay_{i}",
         "status": "failed" if i < FAILED else "finalized"} for i in range(2 * FAILED)])
    conn.execute(insert(payment_callbacks), [
        {"event_id": f"evt_{i}", "payment_ref": f"pay_{i}", "payload": "{}", "status": "applied",
         "event_status": "declined" if i < FAILED else "approved"} for i in range(2 * FAILED)])
    conn.execute(insert(notifications).from_select(
        ["order_id", "customer_id", "type", "dedup_key"],
        select(orders.c.id, orders.c.customer_id, text("'order_failed'"), text("'loader:' || orders.order_ref")),
    ))
    for table in ("customers", "orders", "payment_callbacks", "notifications"):
        conn.exec_driver_sql(f"ANALYZE {table}")


def test_declines_are_looked_up_per_order_not_hashed_per_batch(pg_url):
    engine = get_engine(pg_url)
    with engine.begin() as conn:
        _shop(conn)
        ids = conn.execute(select(notifications.c.id)).scalars().all()
    sent: list[tuple[str, dict]] = []
    capture = lambda conn, cursor, statement, parameters, context, many: sent.append((statement, parameters))  # noqa: E731
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            rows = load_rows(conn, ids)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    [(statement, parameters)] = sent
    with engine.connect() as conn:
        plan = "\n".join(conn.exec_driver_sql("EXPLAIN (VERBOSE) " + statement, parameters).scalars())
    engine.dispose()
    scans = re.findall(r"(SubPlan \d+)\n\s+->\s+[^\n]*? on public\.payment_callbacks", plan)
    assert scans, plan
    assert not [name for name in scans if f"hashed {name}" in plan], plan
    assert {(row.order_status, row.payment_state) for row in rows} == {("failed", "declined"), ("finalized", "paid")}
