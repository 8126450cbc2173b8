"""Claiming work atomically, with a lease.

A run claims rows by stamping `claimed_by` and `claim_expires_at` in one statement; on PostgreSQL
the candidate rows are locked with FOR UPDATE SKIP LOCKED, so two runs never claim the same row.
MariaDB has SKIP LOCKED but no UPDATE … RETURNING (nor LIMIT in an IN subquery): there the
candidates are selected FOR UPDATE SKIP LOCKED, then stamped by id, in the same transaction.
A run that crashes leaves its stamp behind, and the row becomes claimable again once the lease
expires. (SQLite has one writer at a time, which gives the same guarantee.)
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ColumnElement, Connection, Table, or_, select, update

from ordersys_pipelines.db.dialect import lock_rows
from ordersys_pipelines.db.engine import utcnow


def claimable(table: Table) -> ColumnElement[bool]:
    return or_(table.c.claimed_by.is_(None), table.c.claim_expires_at < utcnow())


def claim(
    conn: Connection,
    table: Table,
    *,
    where: ColumnElement[bool],
    order_by: list,
    limit: int,
    claimant: str,
    lease_seconds: int,
) -> list[int]:
    """Claim up to `limit` rows of `table` matching `where` (oldest by `order_by` first)."""
    candidates = lock_rows(
        conn, select(table.c.id).where(where, claimable(table)).order_by(*order_by).limit(limit), skip_locked=True
    )
    stamp = {"claimed_by": claimant, "claim_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if conn.dialect.update_returning:
        statement = update(table).where(table.c.id.in_(candidates.scalar_subquery())).values(**stamp)
        return sorted(conn.execute(statement.returning(table.c.id)).scalars())
    ids = sorted(conn.execute(candidates).scalars())
    if ids:
        conn.execute(update(table).where(table.c.id.in_(ids)).values(**stamp))
    return ids


def release(conn: Connection, table: Table, ids: list[int] | None = None, *, claimant: str) -> int:
    """Give claimed rows back (all of `claimant`'s when `ids` is None)."""
    statement = update(table).where(table.c.claimed_by == claimant)
    if ids is not None:
        statement = statement.where(table.c.id.in_(ids))
    return conn.execute(statement.values(claimed_by=None, claim_expires_at=None)).rowcount
