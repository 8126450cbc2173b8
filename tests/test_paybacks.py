"""Late approvals: a payment approved after its order was cancelled or failed is paid back once,
the customer is told, and the reconciliation sees the money until the gateway has returned it."""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg
import pytest
from concurrency_support import at_once
from payback_support import gateway, settle, to_awaiting_payment
from refunds_support import NO_WAIT, gateway_refund_calls
from sqlalchemy import func, select, update
from workflow_helpers import add_order, statuses, stock

from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import notifications, orders, payment_callbacks, refund_events, refunds
from ordersys_pipelines.domain.analytics.leaderboard import customer_net_revenue, net_revenue_totals
from ordersys_pipelines.domain.notifications.context import attach_lines, load_rows, template_context
from ordersys_pipelines.domain.notifications.templates import render
from ordersys_pipelines.domain.orders.operations import cancel
from ordersys_pipelines.domain.payments.callbacks import epoch, receive
from ordersys_pipelines.domain.payments.reconciliation import reconcile
from ordersys_pipelines.domain.payments.settlement import expire_overdue
from ordersys_pipelines.domain.payments.signing import sign
from ordersys_pipelines.domain.refunds.gateway_refunds import payouts
from ordersys_pipelines.domain.refunds.processing import RefundPolicy, process_batch
from ordersys_pipelines.domain.refunds.requests import request_refund
from ordersys_pipelines.jobs.common import step_output_metadata
from ordersys_pipelines.jobs.refunds import refund_processing
from ordersys_pipelines.jobs.settlement import payment_settlement
from ordersys_pipelines.resources import DatabaseResource, PaymentGatewayResource, WorkflowSettingsResource

NOTHING_CHARGED = "Nothing has been charged"


def _process_refunds(engine, config, run_id="refunds-1"):
    return process_batch(engine, config, limit=100, policy=NO_WAIT, run_id=run_id)


def _paybacks(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(refunds).where(refunds.c.type == "payback").order_by(refunds.c.id)).all()


def _messages(engine, order_ref: str) -> dict[str, str]:
    """Every notification of the order, rendered as dispatch would render it now: type → text."""
    with engine.connect() as conn:
        ids = conn.execute(
            select(notifications.c.id).join(orders, orders.c.id == notifications.c.order_id)
            .where(orders.c.order_ref == order_ref)
        ).scalars().all()
        rows = load_rows(conn, ids)
        attach_lines(conn, rows)
    texts = {}
    for row in rows:
        rendered = render(row.type, template_context(row, "EUR"))
        texts[row.type] = rendered.subject + "\n" + rendered.body
    return texts


def _deliver(engine, config, event: dict, event_id: str | None = None):
    """A signed delivery of `event` (under another event id when given), as the webhook stores it."""
    raw = json.dumps({**event, **({"event_id": event_id} if event_id else {})}).encode()
    with engine.begin() as conn:
        return receive(conn, raw, sign(raw, config.secret, epoch(utcnow())), "webhook", config)


def _callback_event(engine, payment_ref: str) -> dict:
    with engine.connect() as conn:
        payload = conn.execute(
            select(payment_callbacks.c.payload).where(payment_callbacks.c.payment_ref == payment_ref)
            .order_by(payment_callbacks.c.id)
        ).scalars().first()
    return json.loads(payload)


def _arrives_now(engine, config, payment_ref: str) -> None:
    """The simulator's scheduled callback is instead delivered now, signed now (over the webhook)."""
    event = _callback_event(engine, payment_ref)
    with engine.begin() as conn:
        conn.execute(payment_callbacks.delete().where(payment_callbacks.c.payment_ref == payment_ref))
    assert _deliver(engine, config, event).outcome == "stored"


def _assert_paid_back_once(engine, config, order_ref: str, payment_ref: str, status: str, amount_cents: int):
    """One pending payback → processed through the gateway; the order stays dead; clean books."""
    (payback,) = _paybacks(engine)
    assert (payback.reference, payback.status, payback.amount_cents) == (f"payback:{payment_ref}", "pending",
                                                                          amount_cents)
    with engine.connect() as conn:
        dirty = reconcile(conn)
    assert not dirty.clean and dirty.discrepancy_count == 1
    (found,) = dirty.discrepancies
    assert (found.order_ref, found.payment_ref, found.amount_cents, found.order_status, found.payback_status) == (
        order_ref, payment_ref, amount_cents, status, "pending")
    assert found.problem == f"order is {status}; its payback is pending"
    assert order_ref in dirty.table() and payment_ref in dirty.table()

    report = _process_refunds(engine, config)
    assert (report.processed, report.amount_refunded_cents) == (1, amount_cents)
    assert _process_refunds(engine, config).claimed == 0
    (call,) = [c for c in gateway_refund_calls(engine) if c.reference == payback.reference]
    assert (call.payment_ref, call.amount_cents, call.outcome, call.attempts) == (payment_ref, amount_cents,
                                                                                   "succeeded", 1)
    with engine.connect() as conn:
        assert payouts(conn, payback.reference) == 1
        assert statuses(conn)[order_ref] == status
        assert conn.execute(select(orders.c.refund_state).where(orders.c.order_ref == order_ref)).scalar() == "refunded"
        history = conn.execute(
            select(refund_events.c.from_status, refund_events.c.to_status, refund_events.c.run_id)
            .where(refund_events.c.refund_id == payback.id).order_by(refund_events.c.id)
        ).all()
        clean = reconcile(conn)
    assert history == [(None, "pending", "run-1"), ("pending", "processing", "refunds-1"),
                       ("processing", "processed", "refunds-1")]
    assert clean.clean and clean.discrepancies == [] and clean.approved_payments >= 1


def test_late_approval_after_cancel_is_paid_back_and_the_customer_told(engine):
    config = gateway(approval_rate=1.0)
    started = to_awaiting_payment(engine, config, ["O-1", "O-2"])
    ref1 = started.initiated[1]
    with engine.begin() as conn:
        assert cancel(conn, ["O-1"], reason="customer changed their mind").changed == ["O-1"]
    cancelled = _messages(engine, "O-1")["order_cancelled"]
    assert NOTHING_CHARGED not in cancelled and "we return it to you in" in cancelled

    result = settle(engine, config)
    assert result.finalized == [2] and result.paybacks_started == 1 and not result.rejected
    (reason,) = result.late_approvals.values()
    assert reason == f"late approval: order O-1 is cancelled; paid back by refund payback:{ref1}"
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "cancelled", "O-2": "finalized"}
        assert stock(conn) == {"A": (98, 0)}  # the cancelled order's units went back to stock
        callback = conn.execute(select(payment_callbacks).where(payment_callbacks.c.payment_ref == ref1)).one()
    assert (callback.status, callback.reason, callback.event_status, callback.amount_cents) == (
        "applied", reason, "approved", 500)

    texts = _messages(engine, "O-1")
    assert set(texts) == {"order_cancelled", "payment_returned"}
    assert "Your payment of €5.00 for order O-1 is being returned" in texts["payment_returned"]
    assert "was cancelled" in texts["payment_returned"] and f"payback:{ref1}" in texts["payment_returned"]
    assert "it is being returned to you in full" in texts["order_cancelled"]

    _assert_paid_back_once(engine, config, "O-1", ref1, "cancelled", 500)
    assert set(_messages(engine, "O-1")) == {"order_cancelled", "payment_returned", "refund_processed"}
    with engine.connect() as conn:
        # A payback is no revenue: the customer's net revenue is the finalized order alone.
        assert [e.net_revenue_cents for e in customer_net_revenue(conn)] == [500]
        assert net_revenue_totals(conn).net_revenue_cents == 500


def test_late_approval_after_expiry_is_paid_back(engine):
    config = gateway(approval_rate=1.0, callback_delay_seconds=3600)
    started = to_awaiting_payment(engine, config, ["O-1"])
    ref = started.initiated[1]
    with engine.begin() as conn:
        conn.execute(update(orders).values(status_changed_at=utcnow() - timedelta(seconds=901)))
        assert expire_overdue(conn, 900, run_id="run-1", limit=10) == [1]
    failed = _messages(engine, "O-1")["order_failed"]
    assert "payment expired" in failed and NOTHING_CHARGED not in failed and "still goes through" in failed

    _arrives_now(engine, config, ref)
    result = settle(engine, config)
    assert (result.paybacks_started, len(result.late_approvals), result.finalized) == (1, 1, [])
    assert "could not be completed" in _messages(engine, "O-1")["payment_returned"]
    _assert_paid_back_once(engine, config, "O-1", ref, "failed", 500)
    with engine.connect() as conn:
        assert stock(conn) == {"A": (100, 0)}


def test_a_replayed_late_approval_pays_back_once(engine):
    config = gateway(approval_rate=1.0)
    ref = to_awaiting_payment(engine, config, ["O-1"]).initiated[1]
    with engine.begin() as conn:
        cancel(conn, ["O-1"])
    event = _callback_event(engine, ref)
    assert _deliver(engine, config, event).outcome == "duplicate"  # the same event id again
    assert _deliver(engine, config, event, "evt-copy-1").outcome == "stored"  # re-sent under a new id
    first = settle(engine, config)
    assert (len(first.late_approvals), first.paybacks_started, first.duplicates) == (2, 1, 1)
    assert _deliver(engine, config, event, "evt-copy-2").outcome == "stored"  # after the payback exists
    again = settle(engine, config, claimant="run-2", run_id="run-2")
    assert (len(again.late_approvals), again.paybacks_started) == (1, 0)
    _assert_paid_back_once(engine, config, "O-1", ref, "cancelled", 500)
    # A replay after the payback was paid out changes nothing either.
    assert _deliver(engine, config, event, "evt-copy-3").outcome == "stored"
    assert settle(engine, config, claimant="run-3", run_id="run-3").paybacks_started == 0
    assert _process_refunds(engine, config).claimed == 0
    with engine.connect() as conn:
        assert payouts(conn) == 1 and reconcile(conn).clean
        kinds = conn.execute(select(notifications.c.type, func.count()).group_by(notifications.c.type)).all()
    assert dict(kinds) == {"order_cancelled": 1, "payment_returned": 1, "refund_processed": 1}


@pytest.mark.parametrize("how", ["cancel", "expiry"])
def test_a_late_decline_changes_nothing(engine, how):
    config = gateway(approval_rate=0.0, callback_delay_seconds=3600)
    ref = to_awaiting_payment(engine, config, ["O-1"]).initiated[1]
    with engine.begin() as conn:
        if how == "cancel":
            cancel(conn, ["O-1"])
        else:
            conn.execute(update(orders).values(status_changed_at=utcnow() - timedelta(seconds=901)))
            expire_overdue(conn, 900, run_id="run-1", limit=10)
        before = (statuses(conn), stock(conn))
    _arrives_now(engine, config, ref)
    result = settle(engine, config)
    status = "cancelled" if how == "cancel" else "failed"
    assert not result.late_approvals and not result.paybacks_started
    assert list(result.rejected.values()) == [f"not awaiting payment: order O-1 is {status}"]
    with engine.connect() as conn:
        assert (statuses(conn), stock(conn)) == before
        assert conn.execute(select(func.count()).select_from(refunds)).scalar_one() == 0
        event_status = conn.execute(select(payment_callbacks.c.event_status)).scalar_one()
        assert reconcile(conn).clean and reconcile(conn).approved_payments == 0
    assert event_status == "declined" and ref
    texts = _messages(engine, "O-1")
    assert set(texts) == {"order_cancelled" if how == "cancel" else "order_failed"}
    assert NOTHING_CHARGED in next(iter(texts.values()))  # the gateway said it took nothing
    assert _process_refunds(engine, config).claimed == 0


def test_failure_messages_say_nothing_was_charged_only_when_it_is_true(engine):
    config = gateway(approval_rate=0.0)
    to_awaiting_payment(engine, config, ["O-1"])
    with engine.begin() as conn:
        add_order(conn, "O-2", [("A", 1)])  # never reserved: no payment started
        cancel(conn, ["O-2"])
    settle(engine, config)  # O-1 declined
    assert NOTHING_CHARGED in _messages(engine, "O-1")["order_failed"]
    assert "payment declined" in _messages(engine, "O-1")["order_failed"]
    assert NOTHING_CHARGED in _messages(engine, "O-2")["order_cancelled"]


def test_reconciliation_lists_approvals_that_match_no_paid_order(engine):
    config = gateway(approval_rate=1.0)
    started = to_awaiting_payment(engine, config, ["O-1", "O-2"])
    ref1, ref2 = started.initiated[1], started.initiated[2]
    with engine.begin() as conn:
        conn.execute(update(payment_callbacks).values(status="applied"))  # only the crafted ones below
    base = {"status": "approved", "reason": None, "created_at": "2024-03-01T00:00:00Z"}
    _deliver(engine, config, {**base, "event_id": "e-unknown", "payment_ref": "pay_nope", "amount_cents": 500})
    _deliver(engine, config, {**base, "event_id": "e-amount", "payment_ref": ref1, "amount_cents": 501})
    _deliver(engine, config, {**base, "event_id": "e-huge", "payment_ref": ref1, "amount_cents": 10**30})
    _deliver(engine, config, {**base, "event_id": "e-ok", "payment_ref": ref2, "amount_cents": 500})
    result = settle(engine, config)
    # The amount beyond BIGINT is refused at delivery already (strict intake): never an approval.
    assert result.finalized == [2] and len(result.rejected) == 2
    with engine.begin() as conn:
        # A poison row written straight into the table: an approval with its amount missing.
        conn.execute(update(payment_callbacks).where(payment_callbacks.c.event_id == "e-ok")
                     .values(amount_cents=None))
        books = reconcile(conn)
        assert reconcile(conn, limit=2).discrepancies == books.discrepancies[:2]
    problems = sorted(((d.order_ref, d.payment_ref, d.amount_cents, d.problem) for d in books.discrepancies), key=str)
    assert problems == sorted([
        (None, "pay_nope", 500, "no order has this payment reference"),
        ("O-1", ref1, 501, "approved 5.01, the order totals 5.00"),
        ("O-2", ref2, None, "approved amount out of range"),
    ], key=str)
    assert books.discrepancy_count == 3 and books.approved_payments == 3


def test_refund_requests_cannot_take_a_payback_reference(engine):
    config = gateway(approval_rate=1.0)
    ref = to_awaiting_payment(engine, config, ["O-1", "O-2"]).initiated[1]
    settle(engine, config)
    with engine.connect() as conn, pytest.raises(ValueError, match="reserved for the automatic paybacks"):
        request_refund(conn, "O-2", full=True, reference=f"payback:{ref}")
    assert _paybacks(engine) == []


def test_two_concurrent_settlement_runs_pay_each_late_approval_back_once(locking_url):
    engine = get_engine(locking_url)
    config = gateway(approval_rate=1.0)
    refs = to_awaiting_payment(engine, config, [f"O-{i:02d}" for i in range(20)], units=1).initiated
    with engine.begin() as conn:
        cancel(conn, [f"O-{i:02d}" for i in range(20)])
    for ref in refs.values():  # every approval delivered a second time under another event id
        assert _deliver(engine, config, _callback_event(engine, ref), f"copy-{ref}").outcome == "stored"

    def drain(i: int) -> list:
        results = []
        while (result := settle(engine, config, batch_size=3, claimant=f"run-{i}", run_id=f"run-{i}")).claimed:
            results.append(result)
        return results

    runs = at_once(2, drain)
    assert not [r for r in runs if isinstance(r, Exception)], runs
    results = [result for run in runs for result in run]
    assert sum(len(r.late_approvals) for r in results) == 40 and not any(r.rejected for r in results)
    assert sum(r.paybacks_started for r in results) == 20
    paybacks = _paybacks(engine)
    assert sorted(p.reference for p in paybacks) == sorted(f"payback:{ref}" for ref in refs.values())
    with engine.connect() as conn:
        assert set(statuses(conn).values()) == {"cancelled"}
        returned = conn.execute(select(func.count()).where(notifications.c.type == "payment_returned")).scalar()
        assert returned == 20 and reconcile(conn).discrepancy_count == 20

    # Two refund runs at once: each payback paid out exactly once.
    reports = at_once(2, lambda i: process_batch(engine, config, limit=7, policy=NO_WAIT, run_id=f"refunds-{i}"))
    while (report := _process_refunds(engine, config)).claimed:
        reports.append(report)
    assert sum(r.processed for r in reports) == 20
    calls = gateway_refund_calls(engine)
    assert len(calls) == 20 and {(c.outcome, c.attempts) for c in calls} == {("succeeded", 1)}
    with engine.connect() as conn:
        assert payouts(conn) == 20 and reconcile(conn).clean


def test_a_payback_the_gateway_fails_is_retried_with_backoff(engine):
    config = gateway(approval_rate=1.0, refund_failure_rate=1.0)
    ref = to_awaiting_payment(engine, config, ["O-1"]).initiated[1]
    with engine.begin() as conn:
        cancel(conn, ["O-1"])
    settle(engine, config)
    policy = RefundPolicy(max_attempts=3, backoff_seconds=600, lease_seconds=60)
    report = process_batch(engine, config, limit=10, policy=policy, run_id="refunds-1")
    assert (report.retried, report.processed) == (1, 0)
    (payback,) = _paybacks(engine)
    assert payback.status == "pending" and payback.attempts == 1 and payback.next_attempt_at > utcnow()
    assert process_batch(engine, config, limit=10, policy=policy).claimed == 0  # waiting for its backoff
    with engine.begin() as conn:
        conn.execute(update(refunds).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        assert not reconcile(conn).clean
    config = gateway(approval_rate=1.0)
    assert process_batch(engine, config, limit=10, policy=policy, run_id="refunds-2").processed == 1
    with engine.connect() as conn:
        assert payouts(conn, f"payback:{ref}") == 1 and reconcile(conn).clean


def test_the_dagster_jobs_pay_a_late_approval_back(settings, engine):
    config = gateway(approval_rate=1.0)
    ref = to_awaiting_payment(engine, config, ["O-1"]).initiated[1]
    with engine.begin() as conn:
        cancel(conn, ["O-1"])
    resources = {
        "database": DatabaseResource(url=settings.database_url),
        "gateway": PaymentGatewayResource(secret=config.secret, seed=config.seed, refund_failure_rate=0.0),
        "workflow": WorkflowSettingsResource(batch_size=100, claim_lease_seconds=60, payment_timeout_seconds=900),
    }
    instance = dg.DagsterInstance.ephemeral()
    settled = payment_settlement.execute_in_process(instance=instance, resources=resources)
    metadata = step_output_metadata(settled, "apply_callbacks")
    assert (metadata["late_approvals"], metadata["paybacks_started"], metadata["orders_finalized"]) == (1, 1, 0)
    assert "late approvals paid back 1" in metadata["summary"]
    refunded = refund_processing.execute_in_process(instance=instance, resources=resources)
    assert step_output_metadata(refunded, "process_refund_batch")["processed"] == 1
    (payback,) = _paybacks(engine)
    assert (payback.reference, payback.status) == (f"payback:{ref}", "processed")
    with engine.connect() as conn:
        assert reconcile(conn).clean and statuses(conn) == {"O-1": "cancelled"}


def test_a_payback_reference_taken_by_a_row_written_straight_into_the_table_is_a_discrepancy(engine):
    config = gateway(approval_rate=1.0)
    refs = to_awaiting_payment(engine, config, ["O-1", "O-2"]).initiated
    with engine.begin() as conn:
        cancel(conn, ["O-1"])
        # A poison row: O-1's payback reference already used, for the other order.
        conn.execute(refunds.insert().values(order_id=2, reference=f"payback:{refs[1]}", amount_cents=1,
                                             type="partial", status="failed"))
    result = settle(engine, config)
    assert result.finalized == [2] and result.paybacks_started == 0 and len(result.late_approvals) == 1
    with engine.connect() as conn:
        books = reconcile(conn)
    assert [(d.order_ref, d.problem) for d in books.discrepancies] == [
        ("O-1", "order is cancelled and the payment was not paid back")]
