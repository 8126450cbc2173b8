"""notifications: a partial index on the active states (PostgreSQL)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 08:30:00

Dispatch takes due notifications (pending and due, or `sending` with a lapsed lease) oldest
first. Through the full index (status, next_attempt_at) PostgreSQL answered the claim with a
bitmap scan, which never marks the entries of dead row versions: each notification left three
(pending, sending, sent) and the claim of a 1,000-row batch read thousands of heap pages by the
end of a large backlog (25 ms a batch at 66,000 notifications, 7 ms at 20,000). The partial
index (next_attempt_at, id) WHERE status IN ('pending', 'sending') is read in the claim's own
order and stopped at its LIMIT, a sent notification leaves it, and the index scan marks the dead
entries it passes so later claims skip them. Failed notifications, looked up by when they were
last tried (KPIs, the operator's list, the stage figures), get their own partial index.
SQLite's planner proves a partial index's predicate only from identical terms (not from the
claim's OR of two states), so SQLite keeps the full index, as MariaDB does.
"""

from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

PARTIAL = [
    # name, columns, predicate
    ('ix_notifications_active', ['next_attempt_at', 'id'], "status IN ('pending', 'sending')"),
    ('ix_notifications_failed', ['next_attempt_at'], "status = 'failed'"),
]
FULL = ('ix_notifications_status', ['status', 'next_attempt_at'])


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def upgrade() -> None:
    if not _is_postgresql():
        return
    for name, columns, predicate in PARTIAL:
        op.create_index(name, 'notifications', columns, postgresql_where=sa.text(predicate))
    op.drop_index(FULL[0], table_name='notifications')


def downgrade() -> None:
    if not _is_postgresql():
        return
    op.create_index(FULL[0], 'notifications', FULL[1])
    for name, _, _ in PARTIAL:
        op.drop_index(name, table_name='notifications')
