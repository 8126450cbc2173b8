"""Net revenue per customer: orders that reached finalized (finalized, shipped, delivered)
minus that customer's processed refunds. The same definitions as the daily KPIs, summed over
all time, so the leaderboard's total equals total gross − total refunds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, union

from ordersys_pipelines.db.rowsets import in_ids
from ordersys_pipelines.db.schema import customers, orders, refunds
from ordersys_pipelines.domain.analytics.kpis import FINALIZED_STATUSES, REVENUE_REFUNDS
from ordersys_pipelines.domain.isolation import in_savepoint, is_data_error, isolate


@dataclass(frozen=True)
class LeaderboardEntry:
    customer_id: int
    name: str
    email: str | None
    net_revenue_cents: int


def _gross_by_customer(*where):
    return (
        select(orders.c.customer_id, func.sum(orders.c.total_cents).label("cents"))
        .where(orders.c.status.in_(FINALIZED_STATUSES), *where)
        .group_by(orders.c.customer_id)
        .subquery("gross")
    )


def _refunded_by_customer(*where):
    return (
        select(orders.c.customer_id, func.sum(refunds.c.amount_cents).label("cents"))
        .join(orders, orders.c.id == refunds.c.order_id)
        .where(REVENUE_REFUNDS, *where)
        .group_by(orders.c.customer_id)
        .subquery("refunded")
    )


def customer_net_revenue(conn: Connection, only: list[int] | None = None) -> list[LeaderboardEntry]:
    """Every customer with a finalized order or a processed refund (or those of them in
    `only`), with net revenue; one query. A customer whose orders were refunded in full stays
    listed with 0."""
    # The sums themselves are restricted: SQLite evaluates every group of a subquery.
    where = [] if only is None else [in_ids(conn, orders.c.customer_id, only, "customer_ids")]
    gross, refunded = _gross_by_customer(*where), _refunded_by_customer(*where)
    net = func.coalesce(gross.c.cents, 0) - func.coalesce(refunded.c.cents, 0)
    statement = (
        select(customers.c.id, customers.c.name, customers.c.email, customers.c.customer_ref, net)
        .outerjoin(gross, gross.c.customer_id == customers.c.id)
        .outerjoin(refunded, refunded.c.customer_id == customers.c.id)
        .where((gross.c.customer_id.is_not(None)) | (refunded.c.customer_id.is_not(None)))
    )
    return [
        LeaderboardEntry(int(cid), name or (ref or ""), email, int(cents))
        for cid, name, email, ref, cents in conn.execute(statement)
    ]


@dataclass(frozen=True)
class NetRevenueTotals:
    net_revenue_cents: int
    customers: int


def _customers_with_revenue(excluding: list[int]):
    return union(
        select(orders.c.customer_id).where(orders.c.status.in_(FINALIZED_STATUSES),
                                           orders.c.customer_id.not_in(excluding)),
        select(orders.c.customer_id)
        .join(refunds, refunds.c.order_id == orders.c.id)
        .where(REVENUE_REFUNDS, orders.c.customer_id.not_in(excluding)),
    ).subquery()


def _exact_sum(conn: Connection, column, *where) -> int:
    """SUM(column), in SQL; where the database's sum overflows (SQLite stops at 64 bits), the
    same added up in Python."""
    try:
        with conn.begin_nested():
            return int(conn.execute(select(func.coalesce(func.sum(column), 0)).where(*where)).scalar_one())
    except Exception as error:  # noqa: BLE001 - anything but a data error is raised
        if not is_data_error(error):
            raise
    return sum(int(value) for value in conn.execute(select(column).where(*where)).scalars())


def net_revenue_totals(conn: Connection, excluding: Sequence[int] = ()) -> NetRevenueTotals:
    """The leaderboard's expected sum and length, computed without grouping by customer
    (leaving out the customers `excluding`, those the leaderboard could not rank)."""
    excluding = list(excluding)
    gross = _exact_sum(conn, orders.c.total_cents, orders.c.status.in_(FINALIZED_STATUSES),
                       orders.c.customer_id.not_in(excluding))
    refunded = _exact_sum(conn, refunds.c.amount_cents, REVENUE_REFUNDS,
                          refunds.c.order_id.in_(select(orders.c.id).where(orders.c.customer_id.not_in(excluding))))
    count = conn.execute(select(func.count()).select_from(_customers_with_revenue(excluding))).scalar_one()
    return NetRevenueTotals(gross - refunded, int(count))


@dataclass
class RankedRevenue:
    entries: list[LeaderboardEntry]
    left_out: dict[int, str]  # customer id → why their net revenue could not be computed


def customer_net_revenue_isolating(conn: Connection) -> RankedRevenue:
    """`customer_net_revenue`, and where one query fails on a customer's rows (a sum past 64
    bits on SQLite, which a score, a double, could not hold exactly either), the same through
    domain.isolation customer by customer part: those customers are left out and named."""
    try:
        with conn.begin_nested():
            return RankedRevenue(customer_net_revenue(conn), {})
    except Exception as error:  # noqa: BLE001
        if not is_data_error(error):
            raise
    ids = sorted(conn.execute(select(_customers_with_revenue([]).c.customer_id)).scalars())
    batch = isolate(ids, in_savepoint(conn, lambda c, some: customer_net_revenue(c, only=some)),
                    stage="customer leaderboard")
    left_out = {**batch.failed, **dict.fromkeys(batch.deferred, "not ranked: the isolation's budget was spent")}
    return RankedRevenue([entry for part in batch.results for entry in part], left_out)
