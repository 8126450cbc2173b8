"""orders: partial indexes on the active states, fillfactor 85 (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:40:00

The workflow looks orders up by state only while they are active (created and reserved in
FIFO order, awaiting payment by age) or failed (the operator's list); the one index on
(status, order_date, order_ref) held every order, terminal ones too, and took a new entry on
every transition. On PostgreSQL and SQLite it becomes one small partial index per looked-up
state: a finalized order leaves them all. MariaDB has no partial indexes and keeps the full one.
PostgreSQL also leaves 15% of each orders page free, so the new version of an updated order
stays on its page (and is HOT where no indexed column changes, e.g. a claim stamp).
"""

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

PARTIAL = [
    # name, columns, state
    ('ix_orders_created_fifo', ['order_date', 'order_ref'], 'created'),
    ('ix_orders_reserved_fifo', ['order_date', 'order_ref'], 'reserved'),
    ('ix_orders_awaiting_since', ['status_changed_at', 'id'], 'awaiting_payment'),
    ('ix_orders_failed_since', ['status_changed_at'], 'failed'),
]


def _has_partial_indexes() -> bool:
    return op.get_bind().dialect.name in ('postgresql', 'sqlite')


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE orders SET (fillfactor = 85)')
    if not _has_partial_indexes():
        return
    for name, columns, state in PARTIAL:
        where = sa.text(f"status = '{state}'")
        op.create_index(name, 'orders', columns, postgresql_where=where, sqlite_where=where)
    op.drop_index('ix_orders_status_date', table_name='orders')


def downgrade() -> None:
    if _has_partial_indexes():
        op.create_index('ix_orders_status_date', 'orders', ['status', 'order_date', 'order_ref'])
        for name, _, _ in PARTIAL:
            op.drop_index(name, table_name='orders')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE orders RESET (fillfactor)')
