"""paybacks: what each verified payment callback said, and callbacks found by payment reference

Revision ID: 0004
Revises: 0002
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0002'
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table('payment_callbacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_status', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('amount_cents', sa.BigInteger(), nullable=True))
        batch_op.create_index('ix_payment_callbacks_payment_ref', ['payment_ref'], unique=False)
    _record_settled_events()


def _record_settled_events() -> None:
    """Fill the new columns for callbacks settled before them, so the reconciliation also sees
    the approvals of the past (late approvals among them). Only events settlement verified:
    applied ones, and those it rejected for a reason other than the signature or the payload."""
    callbacks = sa.table(
        'payment_callbacks', sa.column('id', sa.BigInteger()), sa.column('payload', sa.Text()),
        sa.column('status', sa.String()), sa.column('reason', sa.Text()), sa.column('event_id', sa.String()),
        sa.column('event_status', sa.String()), sa.column('amount_cents', sa.BigInteger()),
    )
    conn = op.get_bind()
    verified = sa.or_(
        callbacks.c.status == 'applied',
        sa.and_(callbacks.c.status == 'rejected', ~callbacks.c.event_id.like('rejected-%'),
                ~callbacks.c.reason.like('bad signature%'), ~callbacks.c.reason.like('malformed%')),
    )
    last_id = 0
    while True:
        rows = conn.execute(
            sa.select(callbacks.c.id, callbacks.c.payload)
            .where(verified, callbacks.c.event_status.is_(None), callbacks.c.id > last_id)
            .order_by(callbacks.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        last_id = rows[-1].id
        changes = [change for row in rows if (change := _event_facts(row.id, row.payload))]
        if changes:
            conn.execute(
                sa.update(callbacks).where(callbacks.c.id == sa.bindparam('callback_id'))
                .values(event_status=sa.bindparam('new_status'), amount_cents=sa.bindparam('new_amount')),
                changes,
            )


def _event_facts(callback_id: int, payload: str) -> dict | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    status, amount = event.get('status'), event.get('amount_cents')
    if status not in ('approved', 'declined') or not isinstance(amount, int) or isinstance(amount, bool):
        return None
    if not 0 <= amount < 2**63:  # BIGINT
        amount = None
    return {'callback_id': callback_id, 'new_status': status, 'new_amount': amount}


def downgrade() -> None:
    with op.batch_alter_table('payment_callbacks', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_callbacks_payment_ref')
        batch_op.drop_column('amount_cents')
        batch_op.drop_column('event_status')
