"""The simulated gateway's refund call: keyed by reference, never pays out twice, reproducible."""

from __future__ import annotations

import pytest
from refunds_support import gateway, gateway_refund_calls

from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.refunds.gateway_refunds import (
    FAILURE_REASONS,
    GatewayRefundError,
    RefundCall,
    failure_reason,
    payouts,
    refund,
    refund_batch,
)
from ordersys_pipelines.resources.payment_gateway import PaymentGatewayResource


def test_repeated_reference_returns_the_earlier_payout(engine):
    with engine.begin() as conn:
        first = refund(conn, gateway(), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    with engine.begin() as conn:
        second = refund(conn, gateway(), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    assert (first.succeeded, first.replayed, first.attempts) == (True, False, 1)
    assert (second.succeeded, second.replayed, second.attempts) == (True, True, 2)
    (call,) = gateway_refund_calls(engine)
    assert (call.reference, call.outcome, call.attempts, call.amount_cents) == ("R-1", "succeeded", 2, 500)
    with engine.connect() as conn:
        assert payouts(conn) == 1


def test_failed_reference_is_attempted_again_and_can_then_succeed(engine):
    with engine.begin() as conn:
        failed = refund(conn, gateway(failure_rate=1.0), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    assert not failed.succeeded and failed.reason in FAILURE_REASONS
    with engine.connect() as conn:
        assert payouts(conn) == 0
    with engine.begin() as conn:
        paid = refund(conn, gateway(failure_rate=0.0), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    assert (paid.succeeded, paid.replayed, paid.attempts) == (True, False, 2)
    with engine.begin() as conn:  # once paid, a forced failure rate changes nothing
        replay = refund(conn, gateway(failure_rate=1.0), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    assert (replay.succeeded, replay.replayed) == (True, True)
    with engine.connect() as conn:
        assert payouts(conn) == 1


def test_a_reference_reused_for_another_amount_is_refused(engine):
    with engine.begin() as conn:
        refund(conn, gateway(), reference="R-1", payment_ref="PAY-1", amount_cents=500)
    with pytest.raises(GatewayRefundError, match="first sent for 500 cents of payment PAY-1, now for 501"), \
            engine.begin() as conn:
        refund(conn, gateway(), reference="R-1", payment_ref="PAY-1", amount_cents=501)
    with pytest.raises(GatewayRefundError, match="twice"), engine.begin() as conn:
        refund_batch(conn, gateway(), [RefundCall("X", "P", 1), RefundCall("X", "P", 1)])


def test_failures_follow_the_rate_and_repeat_with_the_seed():
    config = gateway(failure_rate=0.3, seed=7)
    draws = [failure_reason(config, f"R-{i}", 1) for i in range(2_000)]
    assert draws == [failure_reason(config, f"R-{i}", 1) for i in range(2_000)]
    assert 0.26 < sum(d is not None for d in draws) / len(draws) < 0.34
    assert draws != [failure_reason(gateway(failure_rate=0.3, seed=8), f"R-{i}", 1) for i in range(2_000)]
    # The attempt number takes part: a retry of a failed reference draws anew.
    assert [failure_reason(config, "R-0", a) for a in range(1, 40)].count(None) > 0
    assert failure_reason(gateway(failure_rate=0.0), "R-0", 1) is None
    assert failure_reason(gateway(failure_rate=1.0, seed=None), "R-0", 1) in FAILURE_REASONS


def test_resource_refund_method_calls_the_simulator(sqlite_url):
    resource = PaymentGatewayResource(secret="s", refund_failure_rate=0.0, seed=1)
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        outcome = resource.refund(conn, "R-9", "PAY-9", 700)
    assert outcome.succeeded and outcome.reference == "R-9"
    assert [c.reference for c in gateway_refund_calls(engine)] == ["R-9"]
