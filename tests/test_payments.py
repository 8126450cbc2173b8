"""Gateway simulator, callback inbox, settlement and expiry."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from workflow_helpers import BASE_DATE, add_order, add_products, gateway_config, statuses, stock

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import gateway_calls, notifications, orders, payment_callbacks
from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments import gateway
from ordersys_pipelines.domain.payments.callbacks import epoch, receive
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import (
    claim_callbacks,
    expire_overdue,
    lock_due_callbacks,
    settle_batch,
)
from ordersys_pipelines.domain.payments.signing import sign

RUN = dict(batch_size=1000, claimant="run-1", lease_seconds=60, run_id="run-1")


def _to_awaiting_payment(engine, config, orders_: dict[str, list[tuple[str, int]]], products_: dict[str, int]):
    with engine.begin() as conn:
        add_products(conn, products_)
        for i, (ref, lines) in enumerate(orders_.items()):
            add_order(conn, ref, lines, date=BASE_DATE + timedelta(minutes=i))
    reserve_batch(engine, **RUN)
    return initiate_batch(engine, config=config, **RUN)


def _settle(engine, config):
    return settle_batch(engine, config=config, **RUN)


def _callback(conn, ref: str) -> dict:
    payload = conn.execute(select(payment_callbacks.c.payload).where(payment_callbacks.c.payment_ref == ref)).scalar()
    return json.loads(payload)


def test_outcomes_are_deterministic_for_a_seed():
    config = gateway_config(approval_rate=0.5, duplicate_rate=0.3)
    refs = [gateway.new_payment_ref(config, f"O-{i}") for i in range(400)]
    assert refs == [gateway.new_payment_ref(config, f"O-{i}") for i in range(400)] and len(set(refs)) == 400
    decisions = [gateway.decide(config, ref) for ref in refs]
    assert decisions == [gateway.decide(config, ref) for ref in refs]
    approved = sum(d.approved for d in decisions)
    assert 150 < approved < 250 and 60 < sum(d.delivered_twice for d in decisions) < 180
    assert {d.reason for d in decisions if not d.approved} <= set(config.decline_reasons)
    other = gateway_config(seed=8)
    assert gateway.new_payment_ref(other, "O-1") != refs[1]
    unseeded = gateway_config(seed=None)
    assert gateway.new_payment_ref(unseeded, "O-1") != gateway.new_payment_ref(unseeded, "O-1")


def test_initiate_records_calls_and_signed_callbacks_some_twice(engine):
    config = gateway_config(approval_rate=0.7, duplicate_rate=0.5, callback_delay_seconds=30)
    started = _to_awaiting_payment(engine, config, {f"O-{i}": [("A", 1)] for i in range(40)}, {"A": 100})
    assert len(started.initiated) == 40 and started.amount_cents == 40 * 250
    with engine.connect() as conn:
        assert set(statuses(conn).values()) == {"awaiting_payment"}
        refs = dict(conn.execute(select(orders.c.id, orders.c.payment_ref)).all())
        assert refs == started.initiated and len(set(refs.values())) == 40
        calls = conn.execute(select(gateway_calls.c.kind, gateway_calls.c.outcome, gateway_calls.c.amount_cents)).all()
        callbacks = conn.execute(select(payment_callbacks)).all()
    assert len(calls) == 40 and {c.kind for c in calls} == {"payment"} and {c.amount_cents for c in calls} == {250}
    assert len(callbacks) == 40
    twice = [c for c in callbacks if c.deliveries == 2]
    expected_twice = [r for r in refs.values() if gateway.decide(config, r).delivered_twice]
    assert sorted(c.payment_ref for c in twice) == sorted(expected_twice) and twice
    for c in callbacks:
        event = json.loads(c.payload)
        assert set(event) == {"event_id", "payment_ref", "status", "amount_cents", "reason", "created_at"}
        assert c.signature == sign(c.payload.encode(), config.secret, c.signed_at)
        assert abs(c.signed_at - epoch(c.available_at)) <= 1
        assert (event["status"] == "approved") == gateway.decide(config, c.payment_ref).approved
    assert min(c.available_at for c in callbacks) > utcnow() + timedelta(seconds=20)
    # Not due yet: settlement waits for the callback delay.
    assert _settle(engine, config).claimed == 0


def test_settlement_finalizes_approvals_and_rolls_back_declines(engine):
    config = gateway_config(approval_rate=0.6, duplicate_rate=0.4)
    started = _to_awaiting_payment(engine, config, {f"O-{i}": [("A", 2), ("B", 1)] for i in range(30)},
                                   {"A": 100, "B": 100})
    result = _settle(engine, config)
    approved = {i for i, ref in started.initiated.items() if gateway.decide(config, ref).approved}
    assert set(result.finalized) == approved and set(result.declined) == set(started.initiated) - approved
    assert 0 < len(approved) < 30 and not result.rejected
    assert result.duplicates == sum(gateway.decide(config, r).delivered_twice for r in started.initiated.values())
    with engine.connect() as conn:
        assert stock(conn) == {"A": (100 - 2 * len(approved), 0), "B": (100 - len(approved), 0)}
        declined = conn.execute(select(orders.c.status_reason).where(orders.c.status == "failed")).scalars().all()
        assert all(r.startswith("payment declined: ") for r in declined) and len(declined) == 30 - len(approved)
        kinds = dict(conn.execute(select(notifications.c.type, func.count()).group_by(notifications.c.type)).all())
        assert kinds == {"order_confirmed": len(approved), "payment_succeeded": len(approved),
                         "payment_failed": 30 - len(approved), "order_failed": 30 - len(approved)}
        assert set(conn.execute(select(payment_callbacks.c.status)).scalars()) == {"applied"}


def _deliver(conn, config, event: dict, *, timestamp=None, secret=None, now=None):
    raw = json.dumps(event).encode()
    header = sign(raw, secret or config.secret, timestamp if timestamp is not None else epoch(now or utcnow()))
    return receive(conn, raw, header, "test", config, now)


def test_duplicate_callback_is_stored_once_and_counted(engine):
    config = gateway_config(approval_rate=1.0)
    started = _to_awaiting_payment(engine, config, {"O-1": [("A", 1)]}, {"A": 5})
    with engine.begin() as conn:
        event = _callback(conn, started.initiated[1])
        assert _deliver(conn, config, event).outcome == "duplicate"
        assert _deliver(conn, config, event).outcome == "duplicate"
    result = _settle(engine, config)
    assert result.finalized == [1] and result.duplicates == 2
    with engine.begin() as conn:
        # A redelivery after settlement changes nothing either.
        assert _deliver(conn, config, event).outcome == "duplicate"
        assert conn.execute(select(payment_callbacks.c.deliveries, payment_callbacks.c.status)).one() == (4, "applied")
        assert stock(conn) == {"A": (4, 0)}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"secret": "not-the-secret"}, "signature does not match"),
        ({"timestamp_offset": -301}, "tolerance 300 s"),
        ({"timestamp_offset": +400}, "tolerance 300 s"),
        ({"header": "sha256=deadbeef"}, "malformed signature header"),
        ({"header": None}, "missing Ordersys-Signature header"),
        ({"header": "t=1,v1=" + "0" * 300}, "longer than 200 characters"),
    ],
)
def test_forged_or_stale_callbacks_are_stored_as_rejected_and_change_nothing(engine, tamper, reason):
    config = gateway_config(approval_rate=0.0)  # the genuine callback declines
    started = _to_awaiting_payment(engine, config, {"O-1": [("A", 1)]}, {"A": 5})
    with engine.begin() as conn:
        conn.execute(update(payment_callbacks).values(status="applied"))  # keep only the forgery pending
        forged = {**_callback(conn, started.initiated[1]), "status": "approved"}
        raw = json.dumps(forged).encode()
        now = utcnow()
        header = sign(raw, tamper.get("secret", config.secret), epoch(now) + tamper.get("timestamp_offset", 0))
        receipt = receive(conn, raw, tamper.get("header", header), "webhook", config, now)
    assert receipt.outcome == "rejected" and reason in receipt.reason
    assert receipt.event_id.startswith("rejected-") and receipt.event_id != forged["event_id"]
    with engine.connect() as conn:
        row = conn.execute(select(payment_callbacks).where(payment_callbacks.c.event_id == receipt.event_id)).one()
        assert (row.status, row.source, row.payment_ref) == ("rejected", "webhook", started.initiated[1])
        assert reason in row.reason
    assert _settle(engine, config).claimed == 0
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "awaiting_payment"} and stock(conn) == {"A": (5, 1)}


def test_malformed_payload_with_valid_signature_is_rejected(engine):
    config = gateway_config()
    with engine.begin() as conn:
        receipt = _deliver(conn, config, {"payment_ref": "pay_x", "status": "approved", "amount_cents": 5})
        assert receipt.outcome == "rejected" and "event_id missing" in receipt.reason
        raw = b"not json"
        assert receive(conn, raw, sign(raw, config.secret), "cli", config).reason == "payload is not valid JSON"


def test_unknown_reference_amount_mismatch_and_not_awaiting_are_rejected(engine):
    config = gateway_config(approval_rate=1.0)
    started = _to_awaiting_payment(engine, config, {"O-1": [("A", 1)], "O-2": [("A", 1)]}, {"A": 5})
    ref1, ref2 = started.initiated[1], started.initiated[2]
    with engine.begin() as conn:
        conn.execute(update(payment_callbacks).values(status="applied"))  # only the crafted ones below
        base = {"status": "approved", "reason": None, "created_at": "2024-03-01T00:00:00Z"}
        _deliver(conn, config, {**base, "event_id": "e-unknown", "payment_ref": "pay_nope", "amount_cents": 250})
        _deliver(conn, config, {**base, "event_id": "e-amount", "payment_ref": ref1, "amount_cents": 251})
        _deliver(conn, config, {**base, "event_id": "e-ok", "payment_ref": ref2, "amount_cents": 250})
        _deliver(conn, config, {**base, "event_id": "e-again", "payment_ref": ref2, "amount_cents": 250,
                                "status": "declined"})
    result = _settle(engine, config)
    assert result.finalized == [2] and not result.declined
    with engine.connect() as conn:
        rows = dict(conn.execute(select(payment_callbacks.c.event_id, payment_callbacks.c.reason)
                                 .where(payment_callbacks.c.status == "rejected")).all())
        assert statuses(conn) == {"O-1": "awaiting_payment", "O-2": "finalized"}
        assert stock(conn) == {"A": (4, 1)}
    assert rows == {
        "e-unknown": "unknown payment reference: pay_nope",
        "e-amount": "amount mismatch: 251 cents, order O-1 totals 250",
        "e-again": "not awaiting payment: order O-2 is finalized",
    }
    assert result.rejected_by_reason() == {"unknown payment reference": 1, "amount mismatch": 1,
                                           "not awaiting payment": 1}


def test_a_callback_edited_in_the_inbox_fails_the_signature_check_at_settlement(engine):
    config = gateway_config(approval_rate=0.0)
    started = _to_awaiting_payment(engine, config, {"O-1": [("A", 1)]}, {"A": 5})
    with engine.begin() as conn:
        payload = conn.execute(select(payment_callbacks.c.payload)).scalar().replace("declined", "approved")
        conn.execute(update(payment_callbacks).values(payload=payload))
    result = _settle(engine, config)
    assert list(result.rejected.values()) == ["bad signature: signature does not match the payload"]
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "awaiting_payment"} and started.initiated


def test_overdue_payments_expire_and_release_stock(engine):
    config = gateway_config(callback_delay_seconds=3600)
    _to_awaiting_payment(engine, config, {"O-1": [("A", 2)], "O-2": [("A", 1)]}, {"A": 5})
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.order_ref == "O-1")
                     .values(status_changed_at=utcnow() - timedelta(seconds=901)))
        assert len(expire_overdue(conn, 900, run_id="run-9", limit=100)) == 1
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "failed", "O-2": "awaiting_payment"}
        assert stock(conn) == {"A": (5, 1)}
        reason = conn.execute(select(orders.c.status_reason).where(orders.c.order_ref == "O-1")).scalar()
        assert reason == "payment expired: no confirmation within 900 s"
        assert conn.execute(select(notifications.c.type, notifications.c.reason)).all() == [("order_failed", reason)]


def test_callbacks_claimed_by_a_dead_run_are_settled_after_the_lease(engine):
    config = gateway_config(approval_rate=1.0)
    _to_awaiting_payment(engine, config, {"O-1": [("A", 1)]}, {"A": 5})
    with engine.begin() as conn:
        claimed = claim_callbacks(conn, limit=10, claimant="dead-run", lease_seconds=60, now=utcnow())
    assert len(claimed) == 1
    assert _settle(engine, config).claimed == 0  # leased to the dead run
    with engine.begin() as conn:
        conn.execute(update(payment_callbacks).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert _settle(engine, config).finalized == [1]
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "finalized"} and stock(conn) == {"A": (4, 0)}


def test_a_settlement_that_dies_leaves_no_claim_behind(engine):
    """Settling calls nothing outside the database, so its callbacks are taken by row locks in
    the settling transaction, never stamped: a run killed mid-way holds nothing once its
    transaction is gone, and the next run settles them at once, not after a lease."""
    config = gateway_config(approval_rate=1.0)
    _to_awaiting_payment(engine, config, {"O-1": [("A", 1)], "O-2": [("A", 1)]}, {"A": 5})
    with engine.connect() as conn:
        conn.begin()
        assert len(lock_due_callbacks(conn, limit=10, now=utcnow())) == 2
        stamped = conn.execute(select(func.count()).select_from(payment_callbacks)
                               .where(payment_callbacks.c.claimed_by.is_not(None))).scalar()
        conn.rollback()  # the run dies: the database rolls its transaction back
    assert stamped == 0
    result = settle_batch(engine, config=config, **{**RUN, "claimant": "run-2", "run_id": "run-2"})
    assert (result.claimed, sorted(result.finalized)) == (2, [1, 2])
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "finalized", "O-2": "finalized"} and stock(conn) == {"A": (3, 0)}
        assert conn.execute(select(func.count()).select_from(payment_callbacks)
                            .where(payment_callbacks.c.claimed_by.is_not(None))).scalar() == 0


def test_a_retried_attempt_of_the_run_takes_its_own_claims_back_at_once(engine):
    config = gateway_config(approval_rate=1.0)
    _to_awaiting_payment(engine, config, {"O-1": [("A", 1)], "O-2": [("A", 2)]}, {"A": 5})
    with engine.begin() as conn:  # the first attempt claimed the callbacks, then its worker died
        claimed = claim_callbacks(conn, limit=10, claimant=RUN["claimant"], lease_seconds=600, now=utcnow())
    assert len(claimed) == 2
    # Same run id, lease far from over: the retry settles them now, once.
    result = _settle(engine, config)
    assert (result.claimed, sorted(result.finalized)) == (2, [1, 2])
    assert _settle(engine, config).claimed == 0
    with engine.connect() as conn:
        assert statuses(conn) == {"O-1": "finalized", "O-2": "finalized"} and stock(conn) == {"A": (2, 0)}


def test_a_callback_of_the_largest_accepted_size_is_stored_whole(engine):
    """MAX_BODY_BYTES is 64 KiB, one byte more than MySQL's TEXT holds."""
    from ordersys_pipelines.domain.payments.callbacks import MAX_BODY_BYTES

    config = gateway_config()
    event = {"event_id": "EV-BIG", "payment_ref": "pay_nope", "status": "approved", "amount_cents": 5, "note": ""}
    event["note"] = "x" * (MAX_BODY_BYTES - len(json.dumps(event).encode()))
    raw = json.dumps(event).encode()
    assert len(raw) == MAX_BODY_BYTES
    with engine.begin() as conn:
        receipt = receive(conn, raw, sign(raw, config.secret, epoch(utcnow())), "test", config)
    assert receipt.reason is None, receipt
    with engine.connect() as conn:
        stored = conn.execute(select(payment_callbacks.c.payload).where(payment_callbacks.c.event_id == "EV-BIG")
                              ).scalar_one()
    assert stored == raw.decode()
