"""notification channel breaker state and notification events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:40:00
"""

from alembic import op
import sqlalchemy as sa

from ordersys_pipelines.db.types import TABLE_OPTIONS, Timestamp, now_default


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('notification_events',
    sa.Column('id', Id, nullable=False),
    sa.Column('notification_id', Id, nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=True),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('attempts_before', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('created_at', Timestamp, server_default=now_default(), nullable=False),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], ondelete='CASCADE',
                            name=op.f('fk_notification_events_notification_id_notifications')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_events')),
    **TABLE_OPTIONS,
    )
    op.create_index('ix_notification_events_notification_id', 'notification_events', ['notification_id'])
    op.create_table('notification_channel_state',
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('deferred', sa.Integer(), server_default='0', nullable=False),
    sa.Column('left_pending', sa.Integer(), server_default='0', nullable=False),
    sa.Column('opened_at', Timestamp, nullable=True),
    sa.Column('retry_at', Timestamp, nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('updated_at', Timestamp, server_default=now_default(), nullable=False),
    sa.PrimaryKeyConstraint('channel', name=op.f('pk_notification_channel_state')),
    **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table('notification_channel_state')
    # The table takes its index with it (MariaDB refuses to drop an index a foreign key needs).
    op.drop_table('notification_events')
