"""The Redis side of analytics on the real server (under this session's key prefix)."""

from __future__ import annotations

import threading
from datetime import date, timedelta

from ordersys_pipelines.domain.analytics.kpis import DayKpis
from ordersys_pipelines.domain.analytics.leaderboard import LeaderboardEntry
from ordersys_pipelines.domain.analytics.redis_store import AnalyticsStore


def store_for(redis_resource) -> tuple[AnalyticsStore, object]:
    client = redis_resource.client()
    return AnalyticsStore(client, redis_resource.key), client


def test_day_keys_follow_the_layout_under_the_prefix(redis_resource):
    store, _ = store_for(redis_resource)
    assert store.day_key(date(2024, 1, 31)) == f"{redis_resource.key_prefix}kpi:daily:2024-01-31"
    assert AnalyticsStore(redis_resource.client()).day_key(date(2024, 1, 31)) == "kpi:daily:2024-01-31"


def test_a_day_is_replaced_whole_and_rewriting_is_identical(redis_resource):
    store, client = store_for(redis_resource)
    day = date(2024, 3, 10)
    key = store.day_key(day)
    client.hset(key, mapping={"order_count": "99", "stale_field": "1"})  # from an older layout
    values = DayKpis(order_count=3, gross_revenue_cents=12_601).as_hash()
    store.write_days({day: values})
    first = client.hgetall(key)
    assert first == {name: str(value) for name, value in values.items()}  # stale field gone
    store.write_days({day: values})
    assert client.hgetall(key) == first
    assert store.read_days([day, date(2024, 3, 11)]) == {day: first, date(2024, 3, 11): None}


def test_a_reader_never_sees_half_a_write(redis_resource):
    """Rewrites alternate between two versions of 2000 days (a pipeline far larger than one
    socket read) while another connection reads the first and the last day together: since
    the whole write is one MULTI/EXEC, both always come from the same version."""
    store, _ = store_for(redis_resource)
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(2000)]
    versions = [{day: DayKpis(order_count=v).as_hash() for day in days} for v in (1, 2)]
    store.write_days(versions[0])
    reader = redis_resource.client()
    seen: list[list] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            pipe = reader.pipeline(transaction=True)
            for day in (days[0], days[-1]):
                pipe.hgetall(store.day_key(day))
            seen.append(pipe.execute())

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for n in range(1, 9):
            store.write_days(versions[n % 2])
    finally:
        done.set()
        thread.join()
    assert len(seen) > 5
    for first, last in seen:
        assert first == last and first["order_count"] in ("1", "2")


def test_leaderboard_is_renamed_into_place_with_names(redis_resource):
    store, client = store_for(redis_resource)
    prefix = redis_resource.key_prefix
    entries = [
        LeaderboardEntry(1, "Alice Ärger", "alice@example.com", 9_000),
        LeaderboardEntry(2, "Bob", "bob@example.com", 0),
        LeaderboardEntry(3, "Carol", None, 12_345),
    ]
    assert store.write_leaderboard(entries) == 3
    assert client.zrange(f"{prefix}leaderboard:customers", 0, -1, withscores=True) == [
        ("2", 0.0), ("1", 9000.0), ("3", 12345.0)
    ]
    top = store.leaderboard_top(2)
    assert [(c.rank, c.customer_id, c.name, c.email, c.net_revenue_cents) for c in top] == [
        (1, 3, "Carol", None, 12_345),
        (2, 1, "Alice Ärger", "alice@example.com", 9_000),
    ]
    assert store.leaderboard_summary() == (3, 21_345)
    # No temporary keys left behind, and the published keys do not expire.
    assert sorted(client.scan_iter(match=f"{prefix}leaderboard:*")) == [
        f"{prefix}leaderboard:customers", f"{prefix}leaderboard:customers:names"
    ]
    assert client.ttl(f"{prefix}leaderboard:customers") == -1
    assert client.ttl(f"{prefix}leaderboard:customers:names") == -1

    # A rebuild replaces the whole set: a customer who dropped out is gone, names too.
    store.write_leaderboard([LeaderboardEntry(3, "Carol", None, 100)])
    assert store.leaderboard_summary() == (1, 100)
    assert client.hkeys(f"{prefix}leaderboard:customers:names") == ["3"]

    store.write_leaderboard([])
    assert client.exists(f"{prefix}leaderboard:customers", f"{prefix}leaderboard:customers:names") == 0
    assert store.leaderboard_top(10) == [] and store.leaderboard_summary() == (0, 0)


def test_a_large_leaderboard_sums_exactly(redis_resource):
    store, _ = store_for(redis_resource)
    entries = [LeaderboardEntry(n, f"c{n}", None, 10**9 + n) for n in range(1, 12_001)]
    store.write_leaderboard(entries)
    assert store.leaderboard_summary() == (12_000, sum(e.net_revenue_cents for e in entries))
