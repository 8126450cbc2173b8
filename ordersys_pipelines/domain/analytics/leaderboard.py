"""Net revenue per customer: orders that reached finalized (finalized, shipped, delivered)
minus that customer's processed refunds. The same definitions as the daily KPIs, summed over
all time, so the leaderboard's total equals total gross − total refunds."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select, union

from ordersys_pipelines.db.schema import customers, orders, refunds
from ordersys_pipelines.domain.analytics.kpis import FINALIZED_STATUSES, REVENUE_REFUNDS


@dataclass(frozen=True)
class LeaderboardEntry:
    customer_id: int
    name: str
    email: str | None
    net_revenue_cents: int


def _gross_by_customer():
    return (
        select(orders.c.customer_id, func.sum(orders.c.total_cents).label("cents"))
        .where(orders.c.status.in_(FINALIZED_STATUSES))
        .group_by(orders.c.customer_id)
        .subquery("gross")
    )


def _refunded_by_customer():
    return (
        select(orders.c.customer_id, func.sum(refunds.c.amount_cents).label("cents"))
        .join(orders, orders.c.id == refunds.c.order_id)
        .where(REVENUE_REFUNDS)
        .group_by(orders.c.customer_id)
        .subquery("refunded")
    )


def customer_net_revenue(conn: Connection) -> list[LeaderboardEntry]:
    """Every customer with a finalized order or a processed refund, with net revenue; one
    query. A customer whose orders were refunded in full stays listed with 0."""
    gross, refunded = _gross_by_customer(), _refunded_by_customer()
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


def net_revenue_totals(conn: Connection) -> NetRevenueTotals:
    """The leaderboard's expected sum and length, computed without grouping by customer."""
    gross = conn.execute(
        select(func.coalesce(func.sum(orders.c.total_cents), 0)).where(orders.c.status.in_(FINALIZED_STATUSES))
    ).scalar_one()
    refunded = conn.execute(
        select(func.coalesce(func.sum(refunds.c.amount_cents), 0)).where(REVENUE_REFUNDS)
    ).scalar_one()
    with_revenue = union(
        select(orders.c.customer_id).where(orders.c.status.in_(FINALIZED_STATUSES)),
        select(orders.c.customer_id)
        .join(refunds, refunds.c.order_id == orders.c.id)
        .where(REVENUE_REFUNDS),
    ).subquery()
    count = conn.execute(select(func.count()).select_from(with_revenue)).scalar_one()
    return NetRevenueTotals(int(gross) - int(refunded), int(count))
