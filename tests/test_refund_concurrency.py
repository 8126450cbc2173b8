"""Concurrent requests and runs on PostgreSQL: threads, each with its own connection."""

from __future__ import annotations

from concurrency_support import at_once
from refunds_support import NO_WAIT, gateway, gateway_refund_calls, make_order, refund_rows
from sqlalchemy import select

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.db.schema import orders
from ordersys_pipelines.domain.refunds.gateway_refunds import payouts
from ordersys_pipelines.domain.refunds.processing import process_batch
from ordersys_pipelines.domain.refunds.requests import (
    RefundReferenceConflict,
    RefundRefused,
    request_refund,
)


def _request(engine, order_ref, amount_cents, reference):
    with engine.connect() as conn:
        return request_refund(conn, order_ref, amount_cents, reference=reference)


def test_twenty_identical_concurrent_requests_make_one_refund_and_one_payout(locking_url):
    engine = get_engine(locking_url)
    make_order(engine, total_cents=8_000)
    results = at_once(20, lambda i: _request(engine, "O-1", 3_000, "same-key"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({r.refund.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert len(refund_rows(engine)) == 1

    # Two runs at once over the one refund: one gateway payout.
    reports = at_once(2, lambda i: process_batch(engine, gateway(), limit=10, policy=NO_WAIT))
    assert sum(r.processed for r in reports) == 1
    (call,) = gateway_refund_calls(engine)
    assert (call.reference, call.outcome, call.attempts) == ("same-key", "succeeded", 1)
    with engine.connect() as conn:
        assert payouts(conn) == 1


def test_ten_concurrent_twenty_percent_refunds_accept_exactly_five(locking_url):
    engine = get_engine(locking_url)
    order_id = make_order(engine, total_cents=10_000)
    results = at_once(10, lambda i: _request(engine, "O-1", 2_000, f"part-{i}"))
    refused = [r for r in results if isinstance(r, RefundRefused)]
    accepted = [r for r in results if not isinstance(r, Exception)]
    assert len(accepted) == 5 and len(refused) == 5, results
    assert all("exceeds the 0.00 left to refund on order O-1" in r.reason for r in refused)
    assert sorted(r.status for r in refund_rows(engine)) == ["pending"] * 5 + ["rejected"] * 5
    assert {r.last_error for r in refund_rows(engine, status="rejected")} == {r.reason for r in refused}

    reports = at_once(3, lambda i: process_batch(engine, gateway(), limit=2, policy=NO_WAIT, run_id=f"run-{i}"))
    while (report := process_batch(engine, gateway(), limit=10, policy=NO_WAIT)).claimed:
        reports.append(report)
    assert sum(r.processed for r in reports) == 5
    assert sum(r.amount_cents for r in refund_rows(engine, status="processed")) == 10_000
    with engine.connect() as conn:
        assert payouts(conn) == 5
        assert conn.execute(select(orders.c.refund_state).where(orders.c.id == order_id)).scalar_one() == "refunded"


def test_one_reference_raced_for_two_orders_is_one_refund_and_a_conflict(locking_url):
    engine = get_engine(locking_url)
    for ref in ("O-1", "O-2"):
        make_order(engine, ref)
    results = at_once(8, lambda i: _request(engine, f"O-{1 + i % 2}", 500, "shared-key"))
    conflicts = [r for r in results if isinstance(r, RefundReferenceConflict)]
    same = [r for r in results if not isinstance(r, Exception)]
    assert len(conflicts) == 4 and len(same) == 4, results
    (row,) = refund_rows(engine)
    assert {r.refund.id for r in same} == {row.id}
    assert all("'shared-key' is already used by refund" in str(c) for c in conflicts)


def test_concurrent_runs_never_process_a_refund_twice(locking_url):
    engine = get_engine(locking_url)
    for i in range(40):
        make_order(engine, f"O-{i}", total_cents=1_000)
        _request(engine, f"O-{i}", 1_000, f"R-{i}")

    def drain(i: int) -> int:
        done = 0
        while (report := process_batch(engine, gateway(), limit=3, policy=NO_WAIT, run_id=f"run-{i}")).claimed:
            done += report.processed
        return done

    assert sum(at_once(4, drain)) == 40
    calls = gateway_refund_calls(engine)
    assert len(calls) == 40 and {c.attempts for c in calls} == {1}
