"""Atomic claims with leases."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import customers, orders
from ordersys_pipelines.domain.claims import claim, release


def _orders(engine, count: int) -> None:
    with engine.begin() as conn:
        customer_id = conn.execute(
            insert(customers).values(email="c@example.com", name="C").returning(customers.c.id)
        ).scalar_one()
        conn.execute(
            insert(orders),
            [{"order_ref": f"O-{i:04d}", "customer_id": customer_id, "order_date": datetime(2024, 1, 1),
              "total_cents": 100} for i in range(count)],
        )


def _claim(conn, claimant: str, limit: int) -> list[int]:
    return claim(conn, orders, where=orders.c.status == "created", order_by=[orders.c.order_ref],
                 limit=limit, claimant=claimant, lease_seconds=60)


def test_claims_do_not_overlap_and_expire(engine):
    _orders(engine, 10)
    with engine.begin() as conn:
        first = _claim(conn, "run-a", 6)
        second = _claim(conn, "run-b", 6)
    assert len(first) == 6 and len(second) == 4 and not set(first) & set(second)
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.claimed_by == "run-a")
                     .values(claim_expires_at=utcnow() - timedelta(seconds=1)))
        assert _claim(conn, "run-c", 10) == first
        assert release(conn, orders, claimant="run-c") == 6
        assert sorted(conn.execute(select(orders.c.id).where(orders.c.claimed_by.is_(None))).scalars()) == first


def test_concurrent_claims_never_share_a_row(locking_url):
    engine = get_engine(locking_url)
    _orders(engine, 500)
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        barrier.wait()
        claimed: list[int] = []
        while True:
            with engine.begin() as conn:
                batch = _claim(conn, name, 25)
            if not batch:
                break
            claimed += batch
        results[name] = claimed

    threads = [threading.Thread(target=worker, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for ids in results.values() for i in ids]
    assert len(everything) == len(set(everything)) == 500
