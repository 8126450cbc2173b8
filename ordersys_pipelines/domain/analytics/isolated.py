"""The daily KPIs when a row cannot be counted.

`compute_range` answers a range with four grouped queries. A row can make one of them fail:
SQLite's SUM stops at 64 bits ("integer overflow"), and a date stored as text it cannot read
has no local day. Then the range is counted again row set by row set through
domain.isolation: the rows of the range (ids only, which every backend reads) are split until
the failing ones stand alone, and the parts are added up in Python, whose integers do not
overflow. So an overflowing sum is still counted exactly, and a row that fails on its own is
left out of the figures and reported, with the reason, in the materialization: a value that
cannot be read cannot be put on a day or into a total, and a made-up one would publish a wrong
figure without a word. Once the row is repaired, materializing the day again counts it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, or_, select

from ordersys_pipelines.db.schema import notifications, orders, refunds
from ordersys_pipelines.domain.analytics.days import day_bounds_utc, days_in
from ordersys_pipelines.domain.analytics.kpis import REVENUE_REFUNDS, DayKpis, _ts, compute_range
from ordersys_pipelines.domain.isolation import in_savepoint, is_data_error, isolate

STAGE = "daily KPIs"


@dataclass(frozen=True)
class LeftOut:
    table: str
    row_id: int
    reason: str


@dataclass
class RangeKpis:
    kpis: dict[date, DayKpis]
    left_out: list[LeftOut] = field(default_factory=list)


def _row_ids(conn: Connection, first: date, last: date, tz: ZoneInfo) -> list[tuple[str, int]]:
    """(table, id) of every row the range's queries read (a superset: by the range's bounds)."""
    start, _ = day_bounds_utc(first, tz)
    _, end = day_bounds_utc(last, tz)

    def within(column):
        return [column >= _ts(conn, start), column < _ts(conn, end)]

    queries = [
        (orders, select(orders.c.id).where(*within(orders.c.order_date))),
        (refunds, select(refunds.c.id).where(REVENUE_REFUNDS, *within(refunds.c.processed_at))),
        (notifications, select(notifications.c.id).where(or_(
            and_(notifications.c.status == "sent", *within(notifications.c.sent_at)),
            and_(notifications.c.status == "failed", *within(notifications.c.next_attempt_at)),
        ))),
    ]
    return [(table.name, row_id) for table, query in queries for row_id in conn.execute(query).scalars()]


def compute_range_isolating(conn: Connection, first: date, last: date, tz: ZoneInfo) -> RangeKpis:
    """`compute_range`, and where it fails on a row, the same counted part by part (module doc)."""
    try:
        with conn.begin_nested():
            return RangeKpis(compute_range(conn, first, last, tz))
    except Exception as error:  # noqa: BLE001 - anything but a data error is raised
        if not is_data_error(error):
            raise

    def count(c: Connection, rows: list[tuple[str, int]]) -> dict[date, DayKpis]:
        only: dict[str, list[int]] = defaultdict(list)
        for table, row_id in rows:
            only[table].append(row_id)
        return compute_range(c, first, last, tz, only=only)

    batch = isolate(_row_ids(conn, first, last, tz), in_savepoint(conn, count), stage=STAGE)
    kpis = {day: DayKpis() for day in days_in(first, last)}
    for part in batch.results:
        for day, value in part.items():
            kpis[day] = kpis[day] + value
    left_out = [LeftOut(table, row_id, reason) for (table, row_id), reason in batch.failed.items()]
    left_out += [LeftOut(table, row_id, "not counted: the isolation's budget was spent")
                 for table, row_id in batch.deferred]
    return RangeKpis(kpis, left_out)
