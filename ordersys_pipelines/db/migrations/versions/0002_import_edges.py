"""import edges: the order of a rejected line, and the file's physical line counts

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

LINE_COUNTS = ('physical_lines', 'blank_lines', 'continued_lines')


def upgrade() -> None:
    with op.batch_alter_table('import_rejects') as batch:
        batch.add_column(sa.Column('order_ref', sa.String(length=100), nullable=True))
    with op.batch_alter_table('import_files') as batch:
        for name in LINE_COUNTS:
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('import_files') as batch:
        for name in reversed(LINE_COUNTS):
            batch.drop_column(name)
    with op.batch_alter_table('import_rejects') as batch:
        batch.drop_column('order_ref')
