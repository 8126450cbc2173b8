"""One bad row never stops a stage: poison rows written straight into the database, and the
shared isolation they are caught by (domain.isolation)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from poison_support import poison_timestamp, write_without_foreign_keys
from refunds_support import NO_WAIT, make_order
from refunds_support import gateway as refund_gateway
from sqlalchemy import exc, insert, select, update
from workflow_helpers import BASE_DATE, add_order, add_products, gateway_config, statuses, stock

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine, utcnow
from ordersys_pipelines.db.schema import (
    gateway_calls,
    notifications,
    order_events,
    order_lines,
    orders,
    payment_callbacks,
    products,
    refund_events,
    refunds,
)
from ordersys_pipelines.domain.isolation import describe, is_data_error, isolate
from ordersys_pipelines.domain.notifications.dispatch import due_summary
from ordersys_pipelines.domain.orders.reservation import reserve_batch
from ordersys_pipelines.domain.payments import gateway
from ordersys_pipelines.domain.payments.initiation import initiate_batch
from ordersys_pipelines.domain.payments.settlement import expire_overdue, next_due, settle_batch
from ordersys_pipelines.domain.refunds.processing import backlog as refund_backlog
from ordersys_pipelines.domain.refunds.processing import process_batch
from ordersys_pipelines.domain.refunds.requests import request_refund


class Bad(ValueError):
    pass


def _attempt_failing_on(bad: set[int], log: list[list[int]]):
    def attempt(batch: list[int]) -> list[int]:
        log.append(batch)
        if bad & set(batch):
            raise Bad(f"item {sorted(bad & set(batch))[0]} is bad")
        return batch

    return attempt


def test_isolate_finds_the_bad_items_and_lets_the_rest_through():
    calls: list[list[int]] = []
    failed_seen = {}
    outcome = isolate(list(range(100)), _attempt_failing_on({17, 64}, calls), fail=failed_seen.update)
    assert sorted(i for part in outcome.results for i in part) == [i for i in range(100) if i not in (17, 64)]
    assert outcome.failed == {17: "item 17 is bad", 64: "item 64 is bad"} == failed_seen
    assert outcome.deferred == []
    assert len(calls) < 40  # about 2·k·log2(n), not n
    # Sub-batches run oldest first: the good items' order is kept.
    assert [i for part in outcome.results for i in part] == sorted(i for part in outcome.results for i in part)


def test_a_clean_batch_runs_once():
    calls: list[list[int]] = []
    outcome = isolate([1, 2, 3], _attempt_failing_on(set(), calls))
    assert calls == [[1, 2, 3]] and outcome.results == [[1, 2, 3]] and not outcome.failed


def test_a_batch_of_nothing_but_bad_items_ends_in_bounded_time():
    calls: list[list[int]] = []
    items = list(range(1000))
    outcome = isolate(items, _attempt_failing_on(set(items), calls), max_failures=50)
    assert len(outcome.failed) >= 20  # every failure after the first path isolates items
    assert sorted([*outcome.failed, *outcome.deferred]) == items  # nothing lost
    assert len(calls) <= 50 + 2 + len(outcome.deferred)


def test_errors_about_the_connection_or_the_code_are_not_isolated():
    def attempt(batch):
        raise exc.ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))

    with pytest.raises(exc.ProgrammingError):
        isolate([1, 2], attempt)
    assert not is_data_error(RuntimeError("bug"))
    assert is_data_error(exc.DataError("SELECT", {"secret": "x"}, Exception("timestamp too large\nDETAIL")))
    assert describe(exc.DataError("SELECT", {"secret": "x"}, Exception("timestamp too large\nDETAIL"))) == (
        "timestamp too large")


def _failed_event(conn, order_id):
    return conn.execute(
        select(order_events.c.from_status, order_events.c.to_status, order_events.c.reason)
        .where(order_events.c.order_id == order_id)
    ).one()


def test_reservation_fails_the_unreadable_order_and_reserves_the_rest(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        ids = [add_order(conn, f"O-{i}", [("A", 1)]) for i in range(5)]
        value = poison_timestamp(conn, "orders", "order_date", ids[2])
    result = reserve_batch(engine, batch_size=100, claimant="run-1", lease_seconds=60, run_id="run-1")
    with engine.connect() as conn:
        assert statuses(conn) == {"O-0": "reserved", "O-1": "reserved", "O-2": "failed", "O-3": "reserved",
                                  "O-4": "reserved"}
        reason = conn.execute(select(orders.c.status_reason).where(orders.c.id == ids[2])).scalar_one()
        assert reason.startswith("bad data in reservation: ") and value.split()[0] in reason
        assert _failed_event(conn, ids[2]) == ("created", "failed", reason)
    assert sorted(result.reserved) == sorted(ids[:2] + ids[3:])
    assert result.failed_by_reason() == {"bad data in reservation": 1}


RUN = dict(batch_size=1000, claimant="run-1", lease_seconds=60, run_id="run-1")


def _order_reason(conn, order_id) -> str:
    return conn.execute(select(orders.c.status_reason).where(orders.c.id == order_id)).scalar_one()


def test_payment_initiation_fails_the_order_whose_gateway_call_cannot_be_stored(engine):
    config = gateway_config()
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        ids = [add_order(conn, f"O-{i}", [("A", 1)], date=BASE_DATE + timedelta(minutes=i)) for i in range(4)]
        # A stale call under the reference the gateway will give O-1: its insert breaks the
        # unique key (a reference pointing at a payment that is not this order's).
        conn.execute(insert(gateway_calls).values(kind="payment", reference=gateway.new_payment_ref(config, "O-1"),
                                                  amount_cents=1, outcome="approved"))
    reserve_batch(engine, **RUN)
    result = initiate_batch(engine, config=config, **RUN)
    with engine.connect() as conn:
        assert statuses(conn) == {"O-0": "awaiting_payment", "O-1": "failed", "O-2": "awaiting_payment",
                                  "O-3": "awaiting_payment"}
        assert _order_reason(conn, ids[1]).startswith("bad data in payment initiation: ")
        assert stock(conn) == {"A": (10, 3)}  # the failed order's reservation was given back
    assert sorted(result.initiated) == [ids[0], ids[2], ids[3]] and result.claimed == 4


def test_settlement_rejects_the_unreadable_callback_and_settles_the_rest(engine):
    config = gateway_config()
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        for i in range(4):
            add_order(conn, f"O-{i}", [("A", 1)], date=BASE_DATE + timedelta(minutes=i))
    reserve_batch(engine, **RUN)
    initiate_batch(engine, config=config, **RUN)
    with engine.begin() as conn:
        callback_ids = list(conn.execute(select(payment_callbacks.c.id).order_by(payment_callbacks.c.id)).scalars())
        poison_timestamp(conn, "payment_callbacks", "available_at", callback_ids[1], past=True)
    result = settle_batch(engine, config=config, **RUN)
    with engine.connect() as conn:
        rows = dict(conn.execute(select(payment_callbacks.c.id, payment_callbacks.c.status)).all())
        reason = conn.execute(select(payment_callbacks.c.reason).where(payment_callbacks.c.id == callback_ids[1])).scalar()
        assert statuses(conn) == {"O-0": "finalized", "O-1": "awaiting_payment", "O-2": "finalized",
                                  "O-3": "finalized"}
    assert rows == {callback_ids[0]: "applied", callback_ids[1]: "rejected", callback_ids[2]: "applied",
                    callback_ids[3]: "applied"}
    assert reason.startswith("bad data in settlement: ")
    assert len(result.finalized) == 3 and result.rejected_by_reason() == {"bad data in settlement": 1}


def test_expiry_fails_the_order_whose_stock_cannot_be_released_and_expires_the_rest(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10, "B": 10})
        good = [add_order(conn, f"O-{i}", [("A", 1)], date=BASE_DATE + timedelta(minutes=i)) for i in range(3)]
        bad = add_order(conn, "O-B", [("B", 2)], date=BASE_DATE + timedelta(minutes=9))
    reserve_batch(engine, **RUN)
    initiate_batch(engine, config=gateway_config(), **RUN)
    with engine.begin() as conn:
        # Inconsistent stock: B says one unit is reserved, the order holds two.
        conn.execute(update(products).where(products.c.sku == "B").values(reserved=1))
    with engine.begin() as conn:
        expired = expire_overdue(conn, 0, run_id="run-2", limit=100, now=utcnow() + timedelta(seconds=5))
    with engine.connect() as conn:
        assert set(statuses(conn).values()) == {"failed"}
        assert {_order_reason(conn, i) for i in good} == {"payment expired: no confirmation within 0 s"}
        reason = _order_reason(conn, bad)
        assert reason.startswith("bad data in expiry: ") and "reserved stock not released" in reason
        assert stock(conn) == {"A": (10, 0), "B": (10, 1)}
    assert sorted(expired) == sorted([*good, bad])


def _refund_setup(engine, refs):
    ids = {}
    for ref in refs:
        make_order(engine, ref, total_cents=10_000)
        with engine.connect() as conn:
            ids[ref] = request_refund(conn, ref, 1_000, reference=f"R-{ref}").refund.id
    return ids


def _refund_state(engine):
    with engine.connect() as conn:
        return {r.reference: (r.status, r.last_error) for r in conn.execute(select(refunds))}


def _last_event(engine, refund_id):
    with engine.connect() as conn:
        return conn.execute(
            select(refund_events.c.from_status, refund_events.c.to_status, refund_events.c.reason)
            .where(refund_events.c.refund_id == refund_id).order_by(refund_events.c.id.desc()).limit(1)
        ).one()


def test_refund_the_gateway_refuses_outright_fails_alone(engine):
    ids = _refund_setup(engine, ["O-1", "O-2", "O-3"])
    with engine.begin() as conn:  # the reference was once sent for another amount
        conn.execute(insert(gateway_calls).values(kind="refund", reference="R-O-2", payment_ref="PAY-O-2",
                                                  amount_cents=999, outcome="failed", attempts=1))
    report = process_batch(engine, refund_gateway(), limit=100, policy=NO_WAIT, run_id="run-1")
    state = _refund_state(engine)
    assert state["R-O-1"] == state["R-O-3"] == ("processed", None)
    status, error = state["R-O-2"]
    assert status == "failed" and error.startswith("bad data in refund processing: refund reference 'R-O-2'")
    assert _last_event(engine, ids["O-2"]) == ("processing", "failed", error)
    assert (report.claimed, report.processed, report.failed) == (3, 2, 1)


def test_refund_of_a_dangling_order_fails_alone(engine):
    ids = _refund_setup(engine, ["O-1", "O-2", "O-3"])
    write_without_foreign_keys(engine, f"UPDATE refunds SET order_id = 999999 WHERE id = {ids['O-2']}")
    report = process_batch(engine, refund_gateway(), limit=100, policy=NO_WAIT, run_id="run-1")
    state = _refund_state(engine)
    assert state["R-O-1"] == state["R-O-3"] == ("processed", None)
    assert state["R-O-2"] == ("failed", "bad data in refund processing: KeyError: 999999")
    assert _last_event(engine, ids["O-2"])[:2] == ("pending", "failed")
    assert (report.claimed, report.processed, report.failed) == (3, 2, 1)


def test_an_item_that_cannot_be_marked_failed_does_not_keep_the_others_unmarked():
    marked = {}

    def fail(errors):
        if 3 in errors:
            raise ValueError("row 3 refuses the update too")
        marked.update(errors)

    outcome = isolate([1, 2, 3, 4], _attempt_failing_on({2, 3}, []), fail=fail)
    assert set(outcome.failed) == {2, 3} and marked == {2: "item 2 is bad"}


def test_orders_show_prints_an_order_whose_stored_values_are_out_of_range(settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no cell is cut
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 10, "B": 10})
        order_id = add_order(conn, "O-1", [("A", 1), ("B", 1)])
        conn.execute(insert(order_events).values(order_id=order_id, to_status="created", reason="imported"))
        # A line total past BIGINT: the database cannot multiply it, Python can.
        conn.execute(update(order_lines).where(order_lines.c.line_no == 2)
                     .values(quantity=2**40, unit_price_cents=2**40))
        value = poison_timestamp(conn, "orders", "order_date", order_id)
        event_id = conn.execute(select(order_events.c.id)).scalar_one()
        poison_timestamp(conn, "order_events", "created_at", event_id)
    shown = CliRunner().invoke(main, ["orders", "show", "O-1"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    assert f"{value.split()[0]}" in flat and "(not a valid date)" in flat
    assert f"{2**80 // 100:,}.{2**80 % 100:02d} EUR" in flat
    assert "Audit trail" in flat and "imported" in flat and "Refunds" in flat


def test_the_looks_of_the_sensors_skip_what_cannot_be_read(engine):
    with engine.begin() as conn:
        add_products(conn, {"A": 10})
        order_id = add_order(conn, "O-1", [("A", 1)], status="awaiting_payment")
        add_order(conn, "O-2", [("A", 1)], status="awaiting_payment")
        nid = conn.execute(insert(notifications).values(order_id=order_id, type="order_confirmed", dedup_key="n1")
                           .returning(notifications.c.id)).scalar_one()
        poison_timestamp(conn, "notifications", "next_attempt_at", nid, past=True)
        poison_timestamp(conn, "orders", "status_changed_at", order_id, past=True)
    with engine.connect() as conn:
        # The only due notification cannot be read: still counted, so the dispatch that
        # isolates it is started.
        count, max_id, latest = due_summary(conn)
        assert (count, max_id) == (1, nid) and latest is not None
        assert next_due(conn, 900) is not None
    refund_ids = _refund_setup(engine, ["R-1", "R-2"])
    with engine.begin() as conn:
        poison_timestamp(conn, "refunds", "next_attempt_at", refund_ids["R-1"])
    with engine.connect() as conn:
        work = refund_backlog(conn)
        assert work.due + work.waiting == 2  # counted wherever the backend sorts the value


def test_ordersys_process_takes_every_good_order_to_the_end_past_a_poison_row(settings, monkeypatch):
    """The whole back office in-process (Dagster runs of every stage), one order unreadable."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("ORDERSYS_GATEWAY_APPROVAL_RATE", "1.0")
    engine = get_engine(settings.database_url)
    with engine.begin() as conn:
        add_products(conn, {"A": 100})
        ids = [add_order(conn, f"O-{i}", [("A", 1)], date=BASE_DATE + timedelta(minutes=i)) for i in range(6)]
        poison_timestamp(conn, "orders", "order_date", ids[4])
    result = CliRunner().invoke(main, ["process"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        assert statuses(conn) == {**{f"O-{i}": "finalized" for i in range(6)}, "O-4": "failed"}
        assert _order_reason(conn, ids[4]).startswith("bad data in reservation: ")
        sent = dict(conn.execute(select(notifications.c.order_id, notifications.c.status)).all())
    assert ids[4] not in sent and set(sent.values()) == {"sent"}  # and every good order's message went out
