"""Daily KPIs, computed by SQL for local days in ORDERSYS_TIMEZONE.

What each field counts, and on which day:

- `order_count`, `gross_revenue_cents`: orders that reached `finalized` (status finalized,
  shipped or delivered), on the local day of their `order_date`, summing `total_cents`.
- `failed_order_count`, `cancelled_order_count`: orders in status failed / cancelled, on the
  day of their `order_date`.
- `refund_count`, `refund_amount_cents`: refunds in status `processed`, on the local day of
  their `processed_at` (which may be later than the order's day); paybacks of late approvals
  are not counted (their orders never counted as revenue).
- `revenue_cents` = gross − refund amount of that day; `average_order_value_cents` = gross //
  order_count (rounded down), 0 without orders.
- `notifications_sent`: notifications in status `sent`, on the day of `sent_at`.
- `notifications_failed`: notifications that ended `failed` (retries exhausted), on the day of
  their last attempt. The schema has no failed-at column; the last attempt is the one that was
  due at `next_attempt_at` (a notification is claimed once that time has come, and a final
  failure does not schedule another), so that is the column used.

A range of days (a backfill) costs one grouped query per table, not one per day: each row's
local day is computed in SQL as `date(utc_ts + offset)`, where the offset comes from a CASE over
the zone's offset segments in the range (see `days.offset_segments`), so DST days are exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Engine,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
)

from ordersys_pipelines.db.dialect import is_mysql
from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import notifications, orders, refunds
from ordersys_pipelines.domain.analytics.days import day_bounds_utc, days_in, offset_segments
from ordersys_pipelines.domain.isolation import is_data_error
from ordersys_pipelines.domain.readable import look

FINALIZED_STATUSES = ("finalized", "shipped", "delivered")
# Refunds that take back revenue: processed, and not a payback (the payment of an order that
# was never finalized, returned; it was never revenue).
REVENUE_REFUNDS = and_(refunds.c.status == "processed", refunds.c.type != "payback")

# The fields of a `kpi:daily:YYYY-MM-DD` hash, in display order.
KPI_FIELDS = (
    "order_count",
    "gross_revenue_cents",
    "refund_count",
    "refund_amount_cents",
    "revenue_cents",
    "average_order_value_cents",
    "failed_order_count",
    "cancelled_order_count",
    "notifications_sent",
    "notifications_failed",
)


@dataclass(frozen=True)
class DayKpis:
    """The measured counts and sums of one day; the derived fields are properties."""

    order_count: int = 0
    gross_revenue_cents: int = 0
    refund_count: int = 0
    refund_amount_cents: int = 0
    failed_order_count: int = 0
    cancelled_order_count: int = 0
    notifications_sent: int = 0
    notifications_failed: int = 0

    @property
    def revenue_cents(self) -> int:
        return self.gross_revenue_cents - self.refund_amount_cents

    @property
    def average_order_value_cents(self) -> int:
        return self.gross_revenue_cents // self.order_count if self.order_count else 0

    def as_hash(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in KPI_FIELDS}

    def __add__(self, other: DayKpis) -> DayKpis:
        return DayKpis(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@contextmanager
def consistent_read(engine: Engine) -> Iterator[Connection]:
    """A transaction in which every query sees the same snapshot (REPEATABLE READ on
    PostgreSQL and InnoDB, whose engines default to READ COMMITTED here; a SQLite transaction
    reads one snapshot already, from its first query)."""
    with reading(engine) as conn:
        if conn.dialect.name != "sqlite":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _ts(conn: Connection, value: datetime) -> ColumnElement:
    """A bound timestamp comparable with stored ones on both backends. SQLite stores text, and
    rows written by `CURRENT_TIMESTAMP` have no fraction: binding bounds (always whole seconds)
    as 'YYYY-MM-DD HH:MM:SS' compares right with both '…:SS' and '…:SS.ffffff'."""
    if conn.dialect.name == "sqlite":
        return literal(value.strftime("%Y-%m-%d %H:%M:%S"), String)
    return literal(value, DateTime)


def _local_day(conn: Connection, column, segments: list[tuple[datetime, int]]) -> ColumnElement:
    """SQL for the local day of a naive-UTC column, given the offset segments of the range."""
    offsets = [literal_column(str(offset)) for _, offset in segments]
    if len(segments) == 1:
        offset = offsets[0]
    else:
        offset = case(
            *[(column < _ts(conn, start), offsets[i]) for i, (start, _) in enumerate(segments[1:])],
            else_=offsets[-1],
        )
    if conn.dialect.name == "postgresql":
        return cast(column + literal_column("interval '1 second'") * offset, Date)
    if is_mysql(conn):
        return cast(func.timestampadd(literal_column("SECOND"), offset, column), Date)
    # Whole seconds first: SQLite rounds fractions to milliseconds, so 23:59:59.9996 would
    # otherwise become the next day.
    return func.date(func.substr(column, 1, 19), func.printf("%d seconds", offset))


def _as_date(value) -> date:
    if value is None:  # SQLite's date() of text that is no timestamp
        raise ValueError("a stored timestamp is not a valid date: it falls on no day")
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# GROUP BY 1 (the first output column, the local day) is understood by both backends and
# avoids repeating the CASE expression.
_BY_DAY = text("1")


def _only(conn: Connection, table, only: Mapping[str, list[int]] | None) -> list:
    """The extra condition restricting `table` to the row ids `only` names (none: every row)."""
    return [] if only is None else [in_ids(conn, table.c.id, only.get(table.name, []), f"{table.name}_ids")]


def _queries(conn: Connection, start: datetime, end: datetime, segments,
             only: Mapping[str, list[int]] | None = None):
    """(statement, field names) per table: each returns (local day, *fields) per day."""
    finalized = orders.c.status.in_(FINALIZED_STATUSES)
    order_day = _local_day(conn, orders.c.order_date, segments)
    yield (
        select(
            order_day,
            func.sum(case((finalized, 1), else_=0)),
            func.sum(case((finalized, orders.c.total_cents), else_=0)),
            func.sum(case((orders.c.status == "failed", 1), else_=0)),
            func.sum(case((orders.c.status == "cancelled", 1), else_=0)),
        )
        .where(
            orders.c.status.in_((*FINALIZED_STATUSES, "failed", "cancelled")),
            orders.c.order_date >= _ts(conn, start),
            orders.c.order_date < _ts(conn, end),
            *_only(conn, orders, only),
        )
        .group_by(_BY_DAY),
        ("order_count", "gross_revenue_cents", "failed_order_count", "cancelled_order_count"),
    )
    yield (
        select(
            _local_day(conn, refunds.c.processed_at, segments),
            func.count(),
            func.sum(refunds.c.amount_cents),
        )
        .where(
            REVENUE_REFUNDS,
            refunds.c.processed_at >= _ts(conn, start),
            refunds.c.processed_at < _ts(conn, end),
            *_only(conn, refunds, only),
        )
        .group_by(_BY_DAY),
        ("refund_count", "refund_amount_cents"),
    )
    for status, column, name in (
        ("sent", notifications.c.sent_at, "notifications_sent"),
        ("failed", notifications.c.next_attempt_at, "notifications_failed"),
    ):
        yield (
            select(_local_day(conn, column, segments), func.count())
            .where(notifications.c.status == status, column >= _ts(conn, start), column < _ts(conn, end),
                   *_only(conn, notifications, only))
            .group_by(_BY_DAY),
            (name,),
        )


def compute_range(
    conn: Connection, first: date, last: date, tz: ZoneInfo, *, only: Mapping[str, list[int]] | None = None
) -> dict[date, DayKpis]:
    """KPIs of every local day from `first` to `last` (both included; days without activity
    are all zeros), with four grouped queries whatever the length of the range. `only`
    (table name → row ids) counts just those rows (analytics.isolated splits a range so)."""
    if last < first:
        raise ValueError(f"empty day range {first} .. {last}")
    start, _ = day_bounds_utc(first, tz)
    _, end = day_bounds_utc(last, tz)
    segments = offset_segments(start, end, tz)
    values: dict[date, dict[str, int]] = {day: {} for day in days_in(first, last)}
    for statement, names in _queries(conn, start, end, segments, only):
        for day_value, *sums in conn.execute(statement):
            day = _as_date(day_value)
            if day not in values:  # the bounds and the CASE disagree: a bug, never drop data
                raise RuntimeError(f"row bucketed into {day}, outside {first} .. {last}")
            values[day].update({name: int(v or 0) for name, v in zip(names, sums, strict=True)})
    return {day: DayKpis(**v) for day, v in values.items()}


def compute_day(conn: Connection, day: date, tz: ZoneInfo) -> DayKpis:
    """KPIs of one local day (bounds converted to UTC in Python; the same SQL as a range)."""
    return compute_range(conn, day, day, tz)[day]


def total(kpis: Mapping[date, DayKpis]) -> DayKpis:
    result = DayKpis()
    for value in kpis.values():
        result = result + value
    return result


@dataclass(frozen=True)
class OrdersBeforeStart:
    """Orders dated before the first KPI day: no partition covers them."""

    count: int
    finalized_count: int
    earliest: datetime | str | None  # as the stored text when it is no readable timestamp


def orders_before_start(conn: Connection, start_utc: datetime) -> OrdersBeforeStart:
    finalized = orders.c.status.in_(FINALIZED_STATUSES)
    before = orders.c.order_date < _ts(conn, start_utc)
    count, finalized_count = conn.execute(
        select(func.count(), func.sum(case((finalized, 1), else_=0))).where(before)
    ).one()
    try:
        with conn.begin_nested():
            earliest = conn.execute(select(func.min(orders.c.order_date)).where(before)).scalar()
    except Exception as error:  # noqa: BLE001 - a zero date or year 0 is the earliest: show its text
        if not is_data_error(error):
            raise
        earliest = conn.execute(select(cast(func.min(orders.c.order_date), String)).where(before)).scalar()
    return OrdersBeforeStart(int(count), int(finalized_count or 0), earliest)


def readable_span(conn: Connection, column, *where) -> tuple[datetime, datetime] | None:
    """(MIN, MAX) of the timestamp `column` over the rows matching `where`, or None without
    rows; over the readable ones where a stored value cannot be read (domain.readable)."""
    low, high = look(conn, select(func.min(column), func.max(column)).where(*where), column)
    return None if low is None else (_as_datetime(low), _as_datetime(high))


def activity_span(conn: Connection) -> tuple[datetime, datetime] | None:
    """Earliest and latest timestamp any KPI counts (UTC), or None on an empty database."""
    candidates = [
        (orders.c.order_date,),
        (refunds.c.processed_at, REVENUE_REFUNDS),
        (notifications.c.sent_at, notifications.c.status == "sent"),
        (notifications.c.next_attempt_at, notifications.c.status == "failed"),
    ]
    spans = [span for column, *where in candidates if (span := readable_span(conn, column, *where)) is not None]
    return (min(low for low, _ in spans), max(high for _, high in spans)) if spans else None


def _as_datetime(value) -> datetime:
    # MIN()/MAX() on SQLite text come back untyped.
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
