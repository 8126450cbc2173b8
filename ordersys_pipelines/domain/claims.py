"""Claiming work atomically, with a lease.

A run claims rows by stamping `claimed_by` and `claim_expires_at` in one statement; on PostgreSQL
the candidate rows are locked with FOR UPDATE SKIP LOCKED, so two runs never claim the same row.
MariaDB has SKIP LOCKED but no UPDATE … RETURNING (nor LIMIT in an IN subquery): there the
candidates are locked by id with FOR UPDATE SKIP LOCKED, then stamped by id, in the same
transaction (see _lock_candidates_by_id).
A run that crashes leaves its stamp behind, and the row becomes claimable again once the lease
expires. (SQLite has one writer at a time, which gives the same guarantee.)

Where the claimed rows are processed in the same transaction as they are claimed (no external
call in between), `lock_claimable` takes them with the row locks alone: no stamp is written,
and a crash frees them at once with the rollback. A caller that hands the rows on past its
commit can write the stamp itself in the statement that updates them anyway (notification
dispatch does: one write per row instead of two).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ColumnElement, Connection, Table, or_, select, update

from ordersys_pipelines.db.dialect import is_mysql, lock_rows
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
    stamp = {"claimed_by": claimant, "claim_expires_at": utcnow() + timedelta(seconds=lease_seconds)}
    if conn.dialect.update_returning:
        statement = update(table).where(table.c.id.in_(_candidates(conn, table, where, order_by, limit)
                                                          .scalar_subquery())).values(**stamp)
        return sorted(conn.execute(statement.returning(table.c.id)).scalars())
    ids = _lock_candidates_by_id(conn, table, where, order_by, limit)
    if ids:
        conn.execute(update(table).where(table.c.id.in_(ids)).values(**stamp))
    return ids


def lock_claimable(conn: Connection, table: Table, *, where: ColumnElement[bool], order_by: list,
                   limit: int) -> list[int]:
    """Lock up to `limit` unclaimed rows of `table` matching `where` (oldest first) for the
    rest of this transaction, skipping rows other transactions hold; nothing is written."""
    if is_mysql(conn):
        return _lock_candidates_by_id(conn, table, where, order_by, limit)
    return sorted(conn.execute(_candidates(conn, table, where, order_by, limit)).scalars())


def _candidates(conn: Connection, table: Table, where, order_by: list, limit: int):
    return lock_rows(
        conn, select(table.c.id).where(where, claimable(table)).order_by(*order_by).limit(limit), skip_locked=True
    )


def _lock_candidates_by_id(conn: Connection, table: Table, where, order_by: list, limit: int) -> list[int]:
    """MySQL: lock exactly the rows to claim. InnoDB locks every row it reads for a FOR UPDATE,
    so `ORDER BY … LIMIT … FOR UPDATE` answered with a filesort holds ALL matching rows until the
    commit, and a concurrent claimer then skips them all and finds no work. Instead: read the
    oldest candidates without locks, lock those by primary key with SKIP LOCKED (the condition
    checked again under the lock), and read further windows while others hold what was seen."""
    ids: list[int] = []
    offset = 0
    while len(ids) < limit:
        need = limit - len(ids)
        window = list(conn.execute(
            select(table.c.id).where(where, claimable(table)).order_by(*order_by).limit(need).offset(offset)
        ).scalars())
        if not window:
            break
        locked = conn.execute(
            select(table.c.id).where(table.c.id.in_(window), where, claimable(table)).with_for_update(skip_locked=True)
        ).scalars()
        ids += [i for i in locked if i not in ids]
        if len(window) < need:
            break
        offset += need
    return sorted(ids[:limit])


def release(conn: Connection, table: Table, ids: list[int] | None = None, *, claimant: str) -> int:
    """Give claimed rows back (all of `claimant`'s when `ids` is None)."""
    statement = update(table).where(table.c.claimed_by == claimant)
    if ids is not None:
        statement = statement.where(table.c.id.in_(ids))
    return conn.execute(statement.values(claimed_by=None, claim_expires_at=None)).rowcount
