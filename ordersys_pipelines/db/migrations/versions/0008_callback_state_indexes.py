"""payment_callbacks: partial indexes on the states looked up (PostgreSQL, SQLite)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:00:00

Settlement takes due callbacks among the pending ones in id order; the operator's list reads
rejected ones by arrival; pruning reads the bounded records (`payload_kept = 'head'`) newest
first. The full indexes (status, available_at) and (payload_kept, id) held every callback and
took a new entry on every insert and again on its settling UPDATE (not HOT: `status` is
indexed), although an applied callback is never looked up by them again. On PostgreSQL and
SQLite they become one small partial index per looked-up set: a settled callback leaves them,
and the claim's plan no longer depends on how many of the table's rows the statistics believe
pending. MariaDB has no partial indexes and keeps the full ones.
"""

from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

PARTIAL = [
    # name, columns, predicate
    ('ix_payment_callbacks_pending', ['id'], "status = 'pending'"),
    ('ix_payment_callbacks_rejected', ['received_at'], "status = 'rejected'"),
    ('ix_payment_callbacks_head', ['id'], "payload_kept = 'head'"),
]
FULL = [
    ('ix_payment_callbacks_status', ['status', 'available_at']),
    ('ix_payment_callbacks_payload_kept', ['payload_kept', 'id']),
]


def _has_partial_indexes() -> bool:
    return op.get_bind().dialect.name in ('postgresql', 'sqlite')


def upgrade() -> None:
    if not _has_partial_indexes():
        return
    for name, columns, predicate in PARTIAL:
        where = sa.text(predicate)
        op.create_index(name, 'payment_callbacks', columns, postgresql_where=where, sqlite_where=where)
    for name, _ in FULL:
        op.drop_index(name, table_name='payment_callbacks')


def downgrade() -> None:
    if not _has_partial_indexes():
        return
    for name, columns in FULL:
        op.create_index(name, 'payment_callbacks', columns)
    for name, _, _ in PARTIAL:
        op.drop_index(name, table_name='payment_callbacks')
