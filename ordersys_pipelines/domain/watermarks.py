"""What the workflow and settlement sensors see: how much work is waiting and a watermark of it.

The watermark is a text that changes whenever the waiting work does (new items, items taken or
released by a lapsed claim), so a backlog sensor can tell "this work was already requested"
from "there is new work" (sensors/backlog.py: watermark_requests). It uses the stages' own
predicates of what is waiting; each part is a count and the highest id, over at most `cap`
rows, so a look stays a few index scans on a large table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Table, func, select

from ordersys_pipelines.db.engine import utcnow
from ordersys_pipelines.db.schema import orders, payment_callbacks
from ordersys_pipelines.domain import claims
from ordersys_pipelines.domain.orders.reservation import eligible
from ordersys_pipelines.domain.orders.states import RESERVED
from ordersys_pipelines.domain.payments.settlement import due_callbacks, overdue

CAP = 100_000


@dataclass(frozen=True)
class Waiting:
    count: int  # items a run could take now (each part counted up to the cap)
    watermark: str  # changes whenever the waiting items do
    capped: bool = False  # a part reached the cap: there may be more than `count`


def _part(conn: Connection, table: Table, where: ColumnElement[bool], cap: int) -> tuple[int, int]:
    ids = select(table.c.id).where(where).limit(cap).subquery()
    count, highest = conn.execute(select(func.count(), func.max(ids.c.id))).one()
    return int(count), int(highest or 0)


def _waiting(parts: list[tuple[int, int]], cap: int) -> Waiting:
    return Waiting(sum(count for count, _ in parts), "-".join(f"{count}.{highest}" for count, highest in parts),
                   capped=any(count >= cap for count, _ in parts))


def workflow_waiting(conn: Connection, cap: int = CAP) -> Waiting:
    """Eligible created orders and reserved ones whose payment has not started, unclaimed."""
    return _waiting([
        _part(conn, orders, eligible() & claims.claimable(orders), cap),
        _part(conn, orders, (orders.c.status == RESERVED) & claims.claimable(orders), cap),
    ], cap)


def settlement_waiting(conn: Connection, timeout_seconds: int, now: datetime | None = None,
                       cap: int = CAP) -> Waiting:
    """Due, unclaimed payment callbacks and orders whose payment is overdue."""
    now = now or utcnow()
    return _waiting([
        _part(conn, payment_callbacks, due_callbacks(now) & claims.claimable(payment_callbacks), cap),
        _part(conn, orders, overdue(timeout_seconds, now), cap),
    ], cap)
