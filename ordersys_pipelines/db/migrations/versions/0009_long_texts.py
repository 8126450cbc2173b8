"""notifications' texts and payment_callbacks.payload as LONGTEXT on MySQL/MariaDB

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 23:00:00

A message about an order of many lines is longer than 64 KiB, which is all MySQL's TEXT holds:
the stored body and payload were cut (silently, under a relaxed sql_mode), so what was kept of
a message was not what was sent, and a payload cut short is no longer JSON. A callback may be 64 KiB
(callbacks.MAX_BODY_BYTES), one byte more than TEXT: one of that size was stored empty.
PostgreSQL's and SQLite's TEXT have no such limit.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = [
    # table, column, nullable
    ('notifications', 'subject', True),
    ('notifications', 'body', True),
    ('notifications', 'payload', True),
    ('payment_callbacks', 'payload', False),
]


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ('mysql', 'mariadb')


def upgrade() -> None:
    if not _is_mysql():
        return
    for table, name, nullable in COLUMNS:
        op.alter_column(table, name, type_=mysql.LONGTEXT(), existing_type=sa.Text(), existing_nullable=nullable)


def downgrade() -> None:
    if not _is_mysql():
        return
    for table, name, nullable in COLUMNS:
        op.alter_column(table, name, type_=sa.Text(), existing_type=mysql.LONGTEXT(), existing_nullable=nullable)
