"""The order state table (every pair) and the set-based transition()."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select
from workflow_helpers import add_order, add_products

from ordersys_pipelines.db.schema import order_events, orders
from ordersys_pipelines.domain.orders import states
from ordersys_pipelines.domain.orders.states import IllegalTransition, transition

# The expected table written out independently of TRANSITIONS: from → the states that may follow.
EXPECTED = {
    "created": {"reserved", "failed", "cancelled"},
    "reserved": {"awaiting_payment", "failed", "cancelled"},
    "awaiting_payment": {"finalized", "failed", "cancelled"},
    "finalized": {"shipped"},
    "shipped": {"delivered"},
    "failed": set(),
    "cancelled": set(),
    "delivered": set(),
}
PAIRS = list(itertools.product(EXPECTED, EXPECTED))


def test_states_are_exactly_the_documented_ones():
    assert set(states.STATES) == set(EXPECTED)


@pytest.mark.parametrize(("current", "requested"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_pair_is_allowed_or_refused_as_specified(current, requested):
    assert states.allowed(current, requested) is (requested in EXPECTED[current])


def test_every_pair_through_the_database(db_url, engine):
    """transition() honours the table for every (current, requested) pair, and a refusal
    changes nothing: one order per current state, each asked to move to every state."""
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        ids = {state: add_order(conn, f"O-{state}", [("A", 1)], status=state) for state in EXPECTED}
    for current, requested in PAIRS:
        with engine.connect() as conn, conn.begin() as tx:
            if requested in EXPECTED[current]:
                assert transition(conn, [ids[current]], requested, "why", "run-1") == 1
                assert conn.execute(select(orders.c.status).where(orders.c.id == ids[current])).scalar() == requested
            else:
                with pytest.raises(IllegalTransition) as refused:
                    transition(conn, [ids[current]], requested, "why", "run-1")
                assert (refused.value.order_ref, refused.value.current, refused.value.requested) == (
                    f"O-{current}", current, requested)
                assert f"order O-{current}: cannot go from {current} to {requested}" in str(refused.value)
            tx.rollback()


def test_transition_records_events_with_reasons_and_run_id(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)])
        b = add_order(conn, "O-2", [("A", 1)])
        assert transition(conn, [a, b], "reserved", None, "run-1") == 2
        assert transition(conn, [a, b], "failed", {a: "reason a", b: "reason b"}, "run-2", expected_from="reserved") == 2
        events = conn.execute(
            select(order_events.c.order_id, order_events.c.from_status, order_events.c.to_status,
                   order_events.c.reason, order_events.c.run_id).order_by(order_events.c.id)
        ).all()
        reasons = dict(conn.execute(select(orders.c.id, orders.c.status_reason)).all())
    assert sorted(events) == sorted([
        (a, "created", "reserved", None, "run-1"), (b, "created", "reserved", None, "run-1"),
        (a, "reserved", "failed", "reason a", "run-2"), (b, "reserved", "failed", "reason b", "run-2"),
    ])
    assert reasons == {a: "reason a", b: "reason b"}


def test_one_illegal_order_stops_the_whole_set(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)])
        b = add_order(conn, "O-2", [("A", 1)], status="finalized")
    with pytest.raises(IllegalTransition, match="O-2: cannot go from finalized to cancelled"), engine.begin() as conn:
        transition(conn, [a, b], "cancelled", "no", None)
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.status).where(orders.c.id == a)).scalar() == "created"
        assert conn.execute(select(order_events)).all() == []


def test_expected_from_narrows_the_sources(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        a = add_order(conn, "O-1", [("A", 1)], status="awaiting_payment")
        with pytest.raises(IllegalTransition, match="awaiting_payment to failed"):
            transition(conn, [a], "failed", "x", None, expected_from="created")
