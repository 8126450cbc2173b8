"""Local days in the configured time zone and their bounds in naive UTC (the form stored).

A local day runs from its local midnight to the next one, so it is 23 or 25 hours long on DST
days. Where a zone skips midnight, the day starts at the transition (zoneinfo maps the missing
wall time with the earlier offset, which lands exactly on the transition instant).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# Sampling step for finding offset changes; no zone changes its offset twice within it.
_OFFSET_PROBE = timedelta(hours=6)


def local_midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    """The instant `day` begins in `tz`, as naive UTC."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def day_bounds_utc(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of the local day `day` in naive UTC."""
    return local_midnight_utc(day, tz), local_midnight_utc(day + timedelta(days=1), tz)


def local_day(ts_utc: datetime, tz: ZoneInfo) -> date:
    """The local day a naive-UTC timestamp falls on."""
    return ts_utc.replace(tzinfo=UTC).astimezone(tz).date()


def days_in(first: date, last: date) -> Iterator[date]:
    """Every day from `first` to `last`, both included."""
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)


def utc_offset_seconds(ts_utc: datetime, tz: ZoneInfo) -> int:
    return int(ts_utc.replace(tzinfo=UTC).astimezone(tz).utcoffset().total_seconds())


def offset_segments(start: datetime, end: datetime, tz: ZoneInfo) -> list[tuple[datetime, int]]:
    """[(segment start, UTC offset in seconds)] covering [start, end) (naive UTC), split exactly
    at every offset change of `tz`, so that within a segment local time = UTC + offset. A year
    has one to three segments; the SQL groups by local day with one CASE over them."""
    segments = [(start, utc_offset_seconds(start, tz))]
    probe = start
    while probe < end:
        following = min(probe + _OFFSET_PROBE, end)
        before, after = utc_offset_seconds(probe, tz), utc_offset_seconds(following, tz)
        if before != after:
            # Binary search to the second: tz transitions fall on whole seconds.
            low, high = probe, following
            while high - low > timedelta(seconds=1):
                middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
                if utc_offset_seconds(middle, tz) == before:
                    low = middle
                else:
                    high = middle
            segments.append((high, after))
        probe = following
    return segments
