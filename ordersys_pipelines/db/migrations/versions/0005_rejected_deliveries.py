"""a bounded record of rejected callback deliveries

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:40:00

A delivery rejected on receipt keeps only its first bytes, its size and hash and the sender's
address (`payload_kept = 'head'`); those rows are pruned to a cap. Rows already stored whole
under a synthetic `rejected-` id become such records too, so an inbox flooded before this
revision shrinks to the same bound.
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

HEAD_CHARS = 400


def _octet_length(dialect: str) -> str:
    if dialect == 'sqlite':
        return 'length(CAST(payload AS BLOB))'
    return 'octet_length(payload)'


def upgrade() -> None:
    with op.batch_alter_table('payment_callbacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_kept', sa.String(length=5), server_default='whole', nullable=False))
        batch_op.add_column(sa.Column('body_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('body_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('remote_addr', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_payment_callbacks_payload_kept', ['payload_kept', 'id'], unique=False)
    dialect = op.get_bind().dialect.name
    op.execute(
        f"UPDATE payment_callbacks SET payload_kept = 'head', body_bytes = {_octet_length(dialect)}, "
        f"payload = substr(payload, 1, {HEAD_CHARS}) "
        "WHERE status = 'rejected' AND event_id LIKE 'rejected-%'"
    )


def downgrade() -> None:
    with op.batch_alter_table('payment_callbacks', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_callbacks_payload_kept')
        batch_op.drop_column('remote_addr')
        batch_op.drop_column('body_sha256')
        batch_op.drop_column('body_bytes')
        batch_op.drop_column('payload_kept')
