"""Processing: claim, check, gateway, record; retries with backoff; crash safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

from refunds_support import NO_WAIT, count, gateway, gateway_refund_calls, make_order, refund_rows
from sqlalchemy import insert, select, update

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import notifications, orders, refund_events, refunds
from ordersys_pipelines.domain.refunds.gateway_refunds import payouts
from ordersys_pipelines.domain.refunds.processing import RefundPolicy, backlog, process_batch
from ordersys_pipelines.domain.refunds.queries import refunds_table
from ordersys_pipelines.domain.refunds.requests import request_refund


def _request(engine, reference, amount_cents=None, order_ref="O-1", **kwargs):
    with engine.connect() as conn:
        return request_refund(conn, order_ref, amount_cents, reference=reference, **kwargs).refund


def _events(engine, refund_id):
    with engine.connect() as conn:
        return conn.execute(
            select(refund_events.c.from_status, refund_events.c.to_status, refund_events.c.reason,
                   refund_events.c.run_id)
            .where(refund_events.c.refund_id == refund_id).order_by(refund_events.c.id)
        ).all()


def _refund_state(engine, order_id):
    with engine.connect() as conn:
        return conn.execute(select(orders.c.refund_state).where(orders.c.id == order_id)).scalar_one()


def test_partial_then_full_refund_processed_with_state_events_and_notifications(engine):
    order_id = make_order(engine, total_cents=10_000)
    first = _request(engine, "R-1", 4_000, reason="late delivery")
    report = process_batch(engine, gateway(), limit=100, policy=NO_WAIT, run_id="run-a")
    assert (report.claimed, report.processed, report.amount_refunded_cents) == (1, 1, 4_000)
    assert _refund_state(engine, order_id) == "partially_refunded"
    rest = _request(engine, "R-2", full=True)
    process_batch(engine, gateway(), limit=100, policy=NO_WAIT, run_id="run-b")
    assert _refund_state(engine, order_id) == "refunded"

    rows = {r.reference: r for r in refund_rows(engine)}
    assert {k: (r.status, r.type, r.attempts, r.claimed_by) for k, r in rows.items()} == {
        "R-1": ("processed", "partial", 1, None), "R-2": ("processed", "full", 1, None)}
    assert rows["R-1"].processed_at is not None and rows["R-2"].amount_cents == 6_000
    assert [(e.from_status, e.to_status, e.run_id) for e in _events(engine, first.id)] == [
        (None, "pending", None), ("pending", "processing", "run-a"), ("processing", "processed", "run-a")]
    with engine.connect() as conn:
        sent = conn.execute(select(notifications.c.refund_id, notifications.c.type, notifications.c.reason)
                            .order_by(notifications.c.refund_id)).all()
        assert payouts(conn) == 2
        table = refunds_table(conn, order_id)
        assert backlog(conn).due == 0
    assert sent == [(first.id, "refund_processed", "late delivery"), (rest.id, "refund_processed", None)]
    assert "R-1" in table and "40.00" in table and "processed" in table and "late delivery" in table


def test_gateway_failure_then_success_on_retry(engine):
    make_order(engine)
    r = _request(engine, "R-1", 2_500)
    policy = RefundPolicy(max_attempts=5, backoff_seconds=30, lease_seconds=60)
    before = utcnow()
    report = process_batch(engine, gateway(failure_rate=1.0), limit=10, policy=policy, run_id="run-a")
    assert (report.processed, report.retried, report.failed) == (0, 1, 0)
    (row,) = refund_rows(engine)
    assert (row.status, row.attempts, row.claimed_by) == ("pending", 1, None)
    assert row.last_error in ("gateway timeout", "processor unavailable", "issuer rejected the reversal")
    assert before + timedelta(seconds=29) < row.next_attempt_at < utcnow() + timedelta(seconds=31)
    # Not due before its backoff has passed.
    assert process_batch(engine, gateway(), limit=10, policy=policy).claimed == 0
    with engine.connect() as conn:
        assert (backlog(conn).due, backlog(conn).waiting) == (0, 1)
    with engine.begin() as conn:
        conn.execute(update(refunds).values(next_attempt_at=utcnow() - timedelta(seconds=1)))

    report = process_batch(engine, gateway(failure_rate=0.0), limit=10, policy=policy, run_id="run-b")
    assert (report.processed, report.retried) == (1, 0)
    (row,) = refund_rows(engine)
    assert (row.status, row.attempts, row.last_error) == ("processed", 2, None)
    (call,) = gateway_refund_calls(engine)
    assert (call.outcome, call.attempts) == ("succeeded", 2)
    assert [(e.from_status, e.to_status) for e in _events(engine, r.id)] == [
        (None, "pending"), ("pending", "processing"), ("processing", "pending"),
        ("pending", "processing"), ("processing", "processed")]
    assert "attempt 1 of 5; next at" in _events(engine, r.id)[2].reason


def test_backoff_doubles_and_the_last_attempt_fails_for_good(engine):
    make_order(engine)
    r = _request(engine, "R-1", 100)
    policy = RefundPolicy(max_attempts=3, backoff_seconds=10, lease_seconds=60)
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 20)] == [10, 20, 40, 3600]
    for attempt in (1, 2, 3):
        with engine.begin() as conn:
            conn.execute(update(refunds).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        report = process_batch(engine, gateway(failure_rate=1.0), limit=10, policy=policy)
        assert (report.retried, report.failed) == ((1, 0) if attempt < 3 else (0, 1))
    (row,) = refund_rows(engine)
    assert (row.status, row.attempts) == ("failed", 3) and row.last_error
    assert "attempt 3 of 3; giving up" in _events(engine, r.id)[-1].reason
    with engine.connect() as conn:
        note = conn.execute(select(notifications)).one()
        assert payouts(conn) == 0
    assert (note.type, note.refund_id, note.reason) == ("refund_failed", r.id, row.last_error)
    # A failed refund frees its amount: the order can be refunded in full again.
    assert _request(engine, "R-2", full=True).amount_cents == 10_000


def test_refund_that_would_now_exceed_the_total_is_skipped(engine):
    order_id = make_order(engine, total_cents=1_000)
    r = _request(engine, "R-1", 600)
    with engine.begin() as conn:  # refunded meanwhile, outside this request's view
        conn.execute(insert(refunds).values(order_id=order_id, reference="manual", amount_cents=600, type="partial",
                                            status="processed", processed_at=utcnow()))
    report = process_batch(engine, gateway(), limit=10, policy=NO_WAIT, run_id="run-a")
    assert (report.claimed, report.skipped, report.processed) == (1, 1, 0)
    row = refund_rows(engine, reference="R-1")[0]
    assert (row.status, row.claimed_by) == ("skipped", None)
    assert row.last_error == "6.00 would bring the refunded total of order O-1 to 12.00, over its total 10.00"
    assert _events(engine, r.id)[-1][:3] == ("pending", "skipped", row.last_error)
    assert gateway_refund_calls(engine) == []


def test_two_refunds_of_one_order_in_one_batch_cannot_together_exceed(engine):
    order_id = make_order(engine, total_cents=1_000)
    with engine.begin() as conn:  # two pending refunds that break the rule (written around the request path)
        for ref in ("A", "B"):
            conn.execute(insert(refunds).values(order_id=order_id, reference=ref, amount_cents=700, type="partial",
                                                next_attempt_at=utcnow() - timedelta(seconds=1)))
    report = process_batch(engine, gateway(), limit=10, policy=NO_WAIT)
    assert (report.processed, report.skipped) == (1, 1)
    assert [(r.reference, r.status) for r in refund_rows(engine)] == [("A", "processed"), ("B", "skipped")]


CRASH_AFTER_GATEWAY = textwrap.dedent("""
    import os, sys
    from ordersys_pipelines.db.engine import get_engine
    from ordersys_pipelines.domain.payments.config import GatewayConfig
    from ordersys_pipelines.domain.refunds import processing

    engine = get_engine(sys.argv[1])
    policy = processing.RefundPolicy(max_attempts=3, backoff_seconds=0, lease_seconds=60)
    report = processing.BatchReport()
    with engine.begin() as conn:
        items = processing.start(conn, limit=10, claimant="doomed-run", run_id="doomed-run", policy=policy,
                                 report=report)
    processing.call_gateway(engine, GatewayConfig(secret="s", refund_failure_rate=0.0, seed=7), items)
    os._exit(9)  # killed before the outcome is recorded
""")


def test_run_killed_after_the_gateway_call_pays_out_once_after_restart(engine, db_url):
    order_id = make_order(engine, total_cents=5_000)
    r = _request(engine, "R-1", 5_000)
    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_GATEWAY, db_url], capture_output=True, text=True)
    assert crashed.returncode == 9, crashed.stderr
    (row,) = refund_rows(engine)
    assert (row.status, row.claimed_by) == ("processing", "doomed-run")
    (call,) = gateway_refund_calls(engine)
    assert (call.outcome, call.attempts) == ("succeeded", 1)  # the money has gone out

    # While the lease holds, nobody else takes it.
    assert process_batch(engine, gateway(), limit=10, policy=NO_WAIT).claimed == 0
    with engine.begin() as conn:
        conn.execute(update(refunds).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    # The restart draws a forced failure rate: only the recorded payout can make it succeed.
    report = process_batch(engine, gateway(failure_rate=1.0), limit=10, policy=NO_WAIT, run_id="restart")
    assert (report.resumed, report.processed, report.replayed, report.amount_refunded_cents) == (1, 1, 1, 5_000)
    (row,) = refund_rows(engine)
    assert (row.status, row.claimed_by) == ("processed", None)
    (call,) = gateway_refund_calls(engine)
    assert (call.outcome, call.attempts) == ("succeeded", 2)
    with engine.connect() as conn:
        assert payouts(conn) == 1
    assert _refund_state(engine, order_id) == "refunded"
    assert [(e.from_status, e.to_status, e.run_id) for e in _events(engine, r.id)] == [
        (None, "pending", None), ("pending", "processing", "doomed-run"),
        ("processing", "processing", "restart"), ("processing", "processed", "restart")]
    assert count(engine, notifications, notifications.c.type == "refund_processed") == 1


def test_a_run_whose_claim_was_taken_over_records_nothing(engine):
    make_order(engine)
    _request(engine, "R-1", 100)
    from ordersys_pipelines.domain.refunds import processing

    report = processing.BatchReport()
    with engine.begin() as conn:
        items = processing.start(conn, limit=10, claimant="slow", run_id="slow", policy=NO_WAIT, report=report)
    outcomes = processing.call_gateway(engine, gateway(), items)
    with engine.begin() as conn:  # the slow run's lease lapses and another run finishes the refund
        conn.execute(update(refunds).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert process_batch(engine, gateway(), limit=10, policy=NO_WAIT, run_id="fast").processed == 1
    with engine.begin() as conn:
        processing.record(conn, items, outcomes, claimant="slow", run_id="slow", policy=NO_WAIT, report=report)
    assert (report.lost, report.processed) == (1, 0)
    assert count(engine, refund_events, refund_events.c.to_status == "processed") == 1
    with engine.connect() as conn:
        assert payouts(conn) == 1
