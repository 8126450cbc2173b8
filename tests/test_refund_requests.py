"""Refund requests: rules, idempotency by reference, and what a refusal records."""

from __future__ import annotations

import pytest
from refunds_support import NO_WAIT, gateway, make_order, refund_rows
from sqlalchemy import select

from ordersys_pipelines.db.schema import refund_events
from ordersys_pipelines.domain.refunds.gateway_refunds import payouts
from ordersys_pipelines.domain.refunds.processing import process_batch
from ordersys_pipelines.domain.refunds.requests import RefundReferenceConflict, RefundRefused, request_refund


def _request(engine, order_ref="O-1", amount_cents=None, **kwargs):
    kwargs.setdefault("reference", "R-1")
    with engine.connect() as conn:
        return request_refund(conn, order_ref, amount_cents, **kwargs)


def test_repeated_request_is_the_same_refund_and_pays_out_once(engine):
    make_order(engine, total_cents=5_000)
    first = _request(engine, amount_cents=1_250, reason="damaged", run_id="run-1")
    again = _request(engine, amount_cents=1_250, reason="typed again")
    assert first.created and not again.created
    assert again.refund == first.refund
    r = first.refund
    assert (r.order_ref, r.amount_cents, r.type, r.status, r.reason) == ("O-1", 1_250, "partial", "pending", "damaged")
    assert len(refund_rows(engine)) == 1

    process_batch(engine, gateway(), limit=100, policy=NO_WAIT)
    assert not _request(engine, amount_cents=1_250).created  # still the same refund once processed
    with engine.connect() as conn:
        assert payouts(conn) == payouts(conn, "R-1") == 1
        events = conn.execute(select(refund_events.c.from_status, refund_events.c.to_status, refund_events.c.reason,
                                     refund_events.c.run_id).order_by(refund_events.c.id)).all()
    assert events[0] == (None, "pending", "damaged", "run-1")
    assert [(e.from_status, e.to_status) for e in events[1:]] == [("pending", "processing"), ("processing", "processed")]


def test_same_reference_with_other_parameters_is_an_error_naming_both(engine):
    make_order(engine, "O-1")
    make_order(engine, "O-2")
    _request(engine, amount_cents=1_000)
    with pytest.raises(RefundReferenceConflict) as other_amount:
        _request(engine, amount_cents=1_001)
    message = str(other_amount.value)
    assert "'R-1'" in message and "order O-1, 10.00, partial, pending" in message and "order O-1, 10.01" in message
    with pytest.raises(RefundReferenceConflict, match="order O-1, 10.00.*order O-2, 10.00"):
        _request(engine, "O-2", amount_cents=1_000)
    with pytest.raises(RefundReferenceConflict, match="the full remaining amount"):
        _request(engine, full=True)
    assert [(r.reference, r.amount_cents) for r in refund_rows(engine)] == [("R-1", 1_000)]


@pytest.mark.parametrize("status", ["created", "reserved", "awaiting_payment", "failed", "cancelled"])
def test_orders_that_are_not_refundable_are_refused_and_recorded(engine, status):
    make_order(engine, status=status)
    with pytest.raises(RefundRefused) as refused:
        _request(engine, amount_cents=100, reason="customer asked")
    assert refused.value.reason == (
        f"order O-1 is {status}: only finalized, shipped or delivered orders can be refunded"
    )
    (row,) = refund_rows(engine)
    assert (row.status, row.last_error, row.reason, row.amount_cents) == (
        "rejected", refused.value.reason, "customer asked", 100)
    assert refused.value.result.refund.id == row.id
    with engine.connect() as conn:
        event = conn.execute(select(refund_events)).one()
    assert (event.from_status, event.to_status, event.reason) == (None, "rejected", refused.value.reason)
    # Repeating the refused request gives the same answer and stores nothing more.
    with pytest.raises(RefundRefused, match=f"is {status}") as again:
        _request(engine, amount_cents=100)
    assert not again.value.result.created and len(refund_rows(engine)) == 1


@pytest.mark.parametrize("status", ["shipped", "delivered"])
def test_shipped_and_delivered_orders_are_refundable(engine, status):
    make_order(engine, status=status)
    assert _request(engine, amount_cents=100).refund.status == "pending"


def test_amount_limits_one_cent_the_remaining_amount_and_one_cent_more(engine):
    make_order(engine, total_cents=10_000)
    cent = _request(engine, amount_cents=1, reference="cent").refund
    assert (cent.amount_cents, cent.type) == (1, "partial")
    with pytest.raises(RefundRefused) as too_much:
        _request(engine, amount_cents=10_000, reference="one-cent-more")
    assert too_much.value.reason == (
        "amount 100.00 exceeds the 99.99 left to refund on order O-1 (total 100.00, refunded 0.00, in flight 0.01)"
    )
    rest = _request(engine, amount_cents=9_999, reference="the-rest").refund
    assert (rest.amount_cents, rest.type, rest.status) == (9_999, "full", "pending")
    with pytest.raises(RefundRefused, match="nothing left to refund"):
        _request(engine, full=True, reference="full-again")
    statuses = {r.reference: (r.status, r.amount_cents) for r in refund_rows(engine)}
    assert statuses == {"cent": ("pending", 1), "one-cent-more": ("rejected", 10_000),
                        "the-rest": ("pending", 9_999), "full-again": ("rejected", 0)}


def test_full_means_what_is_left_after_processed_and_in_flight_refunds(engine):
    make_order(engine, total_cents=10_000)
    _request(engine, amount_cents=3_000, reference="a")
    process_batch(engine, gateway(), limit=10, policy=NO_WAIT)
    _request(engine, amount_cents=2_000, reference="b")  # in flight
    full = _request(engine, full=True, reference="c").refund
    assert (full.amount_cents, full.type) == (5_000, "full")
    assert not _request(engine, full=True, reference="c").created  # --full repeated is the same request


@pytest.mark.parametrize("amount", [0, -5])
def test_amounts_that_are_not_positive_are_refused(engine, amount):
    make_order(engine)
    with pytest.raises(RefundRefused, match="is not positive"):
        _request(engine, amount_cents=amount)
    # Zero can be recorded as a rejected request; a negative amount has no valid row.
    assert [r.status for r in refund_rows(engine)] == (["rejected"] if amount == 0 else [])


def test_unknown_order_and_malformed_arguments(engine):
    with pytest.raises(RefundRefused, match="order NOPE does not exist"):
        _request(engine, "NOPE", amount_cents=100)
    make_order(engine)
    with pytest.raises(TypeError, match="integer number of cents"):
        _request(engine, amount_cents=12.5)
    with pytest.raises(ValueError, match="either an amount"):
        _request(engine, amount_cents=100, full=True)
    with pytest.raises(ValueError, match="reference"):
        _request(engine, amount_cents=100, reference="")
    assert refund_rows(engine) == []


def test_order_without_payment_is_refused(engine):
    make_order(engine, payment_ref=None)
    with pytest.raises(RefundRefused, match="has no payment to refund"):
        _request(engine, amount_cents=100)
