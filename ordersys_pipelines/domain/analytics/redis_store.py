"""The analytics keys in Redis (layout of the system this replaces, see DESIGN):

- `kpi:daily:YYYY-MM-DD`          hash of the day's KPI fields (integers)
- `leaderboard:customers`         sorted set, member customer id, score net revenue in cents
- `leaderboard:customers:names`   hash, customer id → JSON [name, email] for the members, so
                                  readers show names without asking the database

Writes replace whole values inside MULTI/EXEC: a reader sees a day (or the leaderboard) either
as before or as after, never half, and writing the same input twice gives identical contents.
Every key goes through `key` (the deployment's prefix), so tests live under their own prefix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from ordersys_pipelines.domain.analytics.leaderboard import LeaderboardEntry

if TYPE_CHECKING:  # the store is handed a client; only the one who makes it needs the library
    import redis

DAY_KEY = "kpi:daily:{day}"
LEADERBOARD_KEY = "leaderboard:customers"
LEADERBOARD_NAMES_KEY = "leaderboard:customers:names"
_TEMP_TTL_SECONDS = 3600  # a crashed rebuild's temporary keys expire on their own
_CHUNK = 5_000


@dataclass(frozen=True)
class RankedCustomer:
    rank: int
    customer_id: int
    name: str
    email: str | None
    net_revenue_cents: int


class AnalyticsStore:
    def __init__(self, client: redis.Redis, key: Callable[[str], str] = lambda name: name):
        self._redis = client
        self._key = key

    def day_key(self, day: date) -> str:
        return self._key(DAY_KEY.format(day=day.isoformat()))

    # -- daily KPIs ---------------------------------------------------------------------

    def write_days(self, days: Mapping[date, Mapping[str, int]]) -> int:
        """Replace the hash of every given day, all in one MULTI/EXEC (DEL + HSET per day)."""
        if not days:
            return 0
        pipe = self._redis.pipeline(transaction=True)
        for day, values in days.items():
            key = self.day_key(day)
            pipe.delete(key)
            pipe.hset(key, mapping={name: int(value) for name, value in values.items()})
        pipe.execute()
        return len(days)

    def read_days(self, days: Iterable[date]) -> dict[date, dict[str, str] | None]:
        """Each day's hash as stored (None where the key does not exist), in one round trip."""
        days = list(days)
        pipe = self._redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self.day_key(day))
        return {day: (raw or None) for day, raw in zip(days, pipe.execute(), strict=True)}

    def read_day(self, day: date) -> dict[str, str] | None:
        return self.read_days([day])[day]

    # -- leaderboard --------------------------------------------------------------------

    def write_leaderboard(self, entries: Sequence[LeaderboardEntry]) -> int:
        """Build the sorted set and its names under temporary keys, then RENAME both into place
        in one MULTI/EXEC; an empty leaderboard deletes the keys."""
        board, names = self._key(LEADERBOARD_KEY), self._key(LEADERBOARD_NAMES_KEY)
        if not entries:
            self._redis.delete(board, names)
            return 0
        suffix = uuid.uuid4().hex  # concurrent rebuilds never share a temporary key
        temp_board, temp_names = f"{board}:tmp:{suffix}", f"{names}:tmp:{suffix}"
        pipe = self._redis.pipeline(transaction=False)
        for chunk in (entries[i : i + _CHUNK] for i in range(0, len(entries), _CHUNK)):
            pipe.zadd(temp_board, {str(e.customer_id): e.net_revenue_cents for e in chunk})
            pipe.hset(temp_names, mapping={str(e.customer_id): json.dumps([e.name, e.email]) for e in chunk})
        pipe.expire(temp_board, _TEMP_TTL_SECONDS)
        pipe.expire(temp_names, _TEMP_TTL_SECONDS)
        pipe.execute()
        swap = self._redis.pipeline(transaction=True)
        swap.rename(temp_board, board)
        swap.rename(temp_names, names)
        # RENAME carries the source's TTL over; the published keys live until replaced.
        swap.persist(board)
        swap.persist(names)
        swap.execute()
        return len(entries)

    def leaderboard_top(self, n: int) -> list[RankedCustomer]:
        """The `n` customers with the highest net revenue, with names, from Redis only."""
        ranked = self._redis.zrevrange(self._key(LEADERBOARD_KEY), 0, n - 1, withscores=True, score_cast_func=float)
        if not ranked:
            return []
        labels = self._redis.hmget(self._key(LEADERBOARD_NAMES_KEY), [member for member, _ in ranked])
        result = []
        for rank, ((member, score), label) in enumerate(zip(ranked, labels, strict=True), start=1):
            # A rebuild can land between the two reads; a member it dropped has no label.
            name, email = json.loads(label) if label else (f"customer #{member}", None)
            result.append(RankedCustomer(rank, int(member), name, email, int(score)))
        return result

    def leaderboard_summary(self) -> tuple[int, int]:
        """(members, sum of scores) of the published leaderboard, summed inside Redis in one
        atomic step (scores are whole cents, exact as doubles below 2**53)."""
        count, total = self._redis.eval(_SUM_SCRIPT, 1, self._key(LEADERBOARD_KEY))
        return int(count), int(total)


_SUM_SCRIPT = """
local scores = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local total = 0
for i = 2, #scores, 2 do total = total + tonumber(scores[i]) end
return {#scores / 2, string.format('%.0f', total)}
"""
