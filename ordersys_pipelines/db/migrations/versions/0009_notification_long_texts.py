"""notifications: subject, body and payload as LONGTEXT on MySQL/MariaDB

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 23:00:00

A message about an order of many lines is longer than 64 KiB, which is all MySQL's TEXT holds:
the stored body and payload were cut (silently, under a relaxed sql_mode), so what was kept of
a message was not what was sent, and a payload cut short is no longer JSON. PostgreSQL's and
SQLite's TEXT have no such limit.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = ('subject', 'body', 'payload')


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ('mysql', 'mariadb')


def upgrade() -> None:
    if not _is_mysql():
        return
    with op.batch_alter_table('notifications') as batch:
        for name in COLUMNS:
            batch.alter_column(name, type_=mysql.LONGTEXT(), existing_type=sa.Text(), existing_nullable=True)


def downgrade() -> None:
    if not _is_mysql():
        return
    with op.batch_alter_table('notifications') as batch:
        for name in COLUMNS:
            batch.alter_column(name, type_=sa.Text(), existing_type=mysql.LONGTEXT(), existing_nullable=True)
