"""Daily KPIs, the leaderboard query and the touched-days lookup, on both backends, with
crafted rows whose answers are known (local midnight in Berlin, DST days, a refund processed
days after its order, a day with no orders)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from analytics_data import Shop, crafted_march
from sqlalchemy import insert, select

from ordersys_pipelines.db.schema import customers, orders, refunds
from ordersys_pipelines.domain.analytics.days import day_bounds_utc, local_day, offset_segments
from ordersys_pipelines.domain.analytics.freshness import touched_days
from ordersys_pipelines.domain.analytics.kpis import (
    DayKpis,
    activity_span,
    compute_day,
    compute_range,
    orders_before_start,
)
from ordersys_pipelines.domain.analytics.leaderboard import customer_net_revenue, net_revenue_totals

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")


def d(text: str) -> date:
    return date.fromisoformat(text)


def ts(text: str) -> datetime:
    """A naive UTC timestamp, the form the tables store."""
    return datetime.fromisoformat(text)


@pytest.fixture
def march(engine) -> Shop:
    return crafted_march(engine)


def test_known_answers_in_berlin(engine, march):
    with engine.connect() as conn:
        kpis = compute_range(conn, d("2024-03-08"), d("2024-03-12"), BERLIN)
    assert kpis[d("2024-03-08")] == DayKpis()
    assert kpis[d("2024-03-09")] == DayKpis(order_count=1, gross_revenue_cents=5_000)
    day = kpis[d("2024-03-10")]
    assert day == DayKpis(
        order_count=3,
        gross_revenue_cents=12_601,
        failed_order_count=1,
        cancelled_order_count=1,
        notifications_sent=3,
        notifications_failed=1,
    )
    assert (day.revenue_cents, day.average_order_value_cents) == (12_601, 4_200)
    assert kpis[d("2024-03-11")].as_hash() == dict.fromkeys(kpis[d("2024-03-11")].as_hash(), 0)
    refunds_day = kpis[d("2024-03-12")]
    assert refunds_day == DayKpis(refund_count=2, refund_amount_cents=4_000)
    assert refunds_day.as_hash()["revenue_cents"] == -4_000
    assert refunds_day.as_hash()["average_order_value_cents"] == 0


def test_the_same_rows_fall_on_other_days_in_utc(engine, march):
    with engine.connect() as conn:
        kpis = compute_range(conn, d("2024-03-09"), d("2024-03-12"), UTC)
        assert compute_day(conn, d("2024-03-09"), UTC) == kpis[d("2024-03-09")]
    assert kpis[d("2024-03-09")].order_count == 2  # the Berlin-midnight order is 23:00 UTC the day before
    assert kpis[d("2024-03-09")].gross_revenue_cents == 15_000
    assert (kpis[d("2024-03-11")].refund_count, kpis[d("2024-03-12")].refund_count) == (1, 1)


def test_single_days_equal_the_range(engine, march):
    with engine.connect() as conn:
        kpis = compute_range(conn, d("2024-03-08"), d("2024-03-12"), BERLIN)
        for day, value in kpis.items():
            assert compute_day(conn, day, BERLIN) == value


@pytest.mark.parametrize(
    ("day", "inside", "outside"),
    [
        # Spring forward: 23 hours, 2024-03-30T23:00Z .. 2024-03-31T22:00Z.
        (
            "2024-03-31",
            ["2024-03-30 23:00:00", "2024-03-31 00:59:59", "2024-03-31 01:00:00", "2024-03-31 21:59:59.999999"],
            ["2024-03-30 22:59:59.999999", "2024-03-31 22:00:00"],
        ),
        # Fall back: 25 hours, 2024-10-26T22:00Z .. 2024-10-27T23:00Z; 02:30 happens twice.
        (
            "2024-10-27",
            ["2024-10-26 22:00:00", "2024-10-27 00:30:00", "2024-10-27 01:30:00", "2024-10-27 22:59:59"],
            ["2024-10-26 21:59:59", "2024-10-27 23:00:00"],
        ),
    ],
)
def test_dst_days_in_berlin(engine, day, inside, outside):
    shop = Shop(engine)
    customer = shop.customer("Dora")
    for n, stamp in enumerate(inside + outside):
        shop.order(customer, ts(stamp), 100 + n)
    first, last = d(day) - timedelta(days=1), d(day) + timedelta(days=1)
    with engine.connect() as conn:
        single = compute_day(conn, d(day), BERLIN)
        around = compute_range(conn, first, last, BERLIN)
        # A range wide enough to hold both transitions uses a multi-segment CASE.
        year = compute_range(conn, d("2024-01-01"), d("2024-12-31"), BERLIN)
    assert single.order_count == len(inside)
    assert single.gross_revenue_cents == sum(100 + n for n in range(len(inside)))
    assert around[d(day)] == single == year[d(day)]
    assert sum(k.order_count for k in around.values()) == len(inside) + len(outside)
    assert sum(k.order_count for k in year.values()) == len(inside) + len(outside)


def test_offset_segments_split_exactly_at_transitions():
    start, end = day_bounds_utc(d("2024-01-01"), BERLIN)[0], day_bounds_utc(d("2024-12-31"), BERLIN)[1]
    assert offset_segments(start, end, BERLIN) == [
        (ts("2023-12-31 23:00:00"), 3600),
        (ts("2024-03-31 01:00:00"), 7200),
        (ts("2024-10-27 01:00:00"), 3600),
    ]
    assert len(offset_segments(start, end, UTC)) == 1


def test_a_year_of_random_rows_matches_python_bucketing_in_several_zones(engine):
    """The grouped SQL against a plain Python oracle, including rows exactly at each local
    midnight (and a microsecond before) in zones with DST, a half-hour offset (Kolkata) and a
    half-hour DST shift (Lord Howe)."""
    zones = [ZoneInfo(z) for z in ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")]
    rng = random.Random(6)
    base = ts("2024-01-01 00:00:00")
    stamps = [base + timedelta(seconds=rng.randrange(366 * 86400), microseconds=rng.randrange(10**6)) for _ in range(400)]
    for zone in zones:
        for month in range(1, 13):
            midnight = day_bounds_utc(date(2024, month, 1), zone)[0]
            stamps += [midnight, midnight - timedelta(microseconds=1)]
        for transition, _ in offset_segments(*day_bounds_utc(d("2024-01-01"), zone), zone)[1:]:
            stamps.append(transition)
    stamps += [start for zone in zones for start, _ in offset_segments(ts("2024-01-02"), ts("2024-12-30"), zone)[1:]]
    statuses = ["finalized", "shipped", "delivered", "failed", "cancelled", "created"]
    rows = [
        {
            "order_ref": f"X-{i}",
            "customer_id": 1,
            "order_date": stamp,
            "total_cents": rng.randrange(1, 50_000),
            "status": rng.choice(statuses),
        }
        for i, stamp in enumerate(stamps)
    ]
    with engine.begin() as conn:
        conn.execute(insert(customers).values(id=1, name="Many", email="many@example.com"))
        conn.execute(insert(orders), rows)
    first, last = d("2024-01-02"), d("2024-12-30")
    for zone in zones:
        expected: dict[date, DayKpis] = {}
        for row in rows:
            day = local_day(row["order_date"], zone)
            if not first <= day <= last:
                continue
            status = row["status"]
            value = DayKpis(
                order_count=int(status in ("finalized", "shipped", "delivered")),
                gross_revenue_cents=row["total_cents"] if status in ("finalized", "shipped", "delivered") else 0,
                failed_order_count=int(status == "failed"),
                cancelled_order_count=int(status == "cancelled"),
            )
            expected[day] = expected.get(day, DayKpis()) + value
        with engine.connect() as conn:
            computed = compute_range(conn, first, last, zone)
        nonzero = {day: k for day, k in expected.items() if k != DayKpis()}
        assert {day: k for day, k in computed.items() if k != DayKpis()} == nonzero, zone.key


def test_orders_before_the_start_are_counted(engine, march):
    start = day_bounds_utc(d("2024-03-10"), BERLIN)[0]
    with engine.connect() as conn:
        early = orders_before_start(conn, start)
        assert orders_before_start(conn, day_bounds_utc(d("2020-01-01"), BERLIN)[0]).count == 0
    assert (early.count, early.finalized_count, early.earliest) == (1, 1, ts("2024-03-09 22:59:59"))


def test_activity_span(engine, march):
    with engine.connect() as conn:
        assert activity_span(conn) == (ts("2024-03-09 22:59:59"), ts("2024-03-12 10:00:00"))


def test_activity_span_of_an_empty_database(engine):
    with engine.connect() as conn:
        assert activity_span(conn) is None


def test_leaderboard_net_revenue_and_totals(engine):
    shop = Shop(engine)
    alice, bob, carol, dave, eve = (shop.customer(n) for n in ("Alice", "Bob", "Carol", "Dave", "Eve"))
    a = shop.order(alice, ts("2024-01-01 10:00"), 10_000)
    shop.order(alice, ts("2024-01-02 10:00"), 2_000, "shipped")
    shop.refund(a, 3_000, ts("2024-01-03 10:00"))
    b = shop.order(bob, ts("2024-01-01 11:00"), 5_000, "delivered")
    shop.refund(b, 5_000, ts("2024-01-04 10:00"))  # refunded in full: listed with 0
    shop.order(carol, ts("2024-01-01 12:00"), 7_000, "failed")  # no revenue: not listed
    dv = shop.order(dave, ts("2024-01-01 13:00"), 100)
    shop.refund(dv, 50, None, status="pending")
    e = shop.order(eve, ts("2024-01-01 14:00"), 200, "cancelled")
    shop.refund(e, 200, ts("2024-01-02 10:00"))  # refunded, then cancelled: counts against her
    with engine.connect() as conn:
        entries = {e.customer_id: e for e in customer_net_revenue(conn)}
        totals = net_revenue_totals(conn)
    assert {cid: e.net_revenue_cents for cid, e in entries.items()} == {alice: 9_000, bob: 0, dave: 100, eve: -200}
    assert entries[alice].name == "Alice" and entries[alice].email.endswith("@example.com")
    assert (totals.net_revenue_cents, totals.customers) == (8_900, 4)
    assert sum(e.net_revenue_cents for e in entries.values()) == totals.net_revenue_cents


def test_touched_days_of_a_run(engine, march):
    shop = march
    with engine.connect() as conn:
        ids = dict(conn.execute(select(orders.c.total_cents, orders.c.id)).all())
        refund_ids = conn.execute(select(refunds.c.id).order_by(refunds.c.id)).scalars().all()
    shop.order_event(ids[10_000], "run-1")  # 03-10 Berlin
    shop.order_event(ids[5_000], "run-1")  # 03-09 Berlin
    shop.order_event(ids[5_000], "run-1", "delivered")  # two events, one order
    shop.refund_event(refund_ids[0], "run-1")  # processed 03-12
    shop.refund_event(refund_ids[3], "run-2", "failed")  # never processed
    with engine.connect() as conn:
        touched = touched_days(conn, "run-1", BERLIN)
        assert touched_days(conn, "run-2", BERLIN) is None
        assert touched_days(conn, "no-such-run", BERLIN) is None
    assert (touched.first, touched.last, touched.orders, touched.refunds) == (d("2024-03-09"), d("2024-03-12"), 2, 1)
