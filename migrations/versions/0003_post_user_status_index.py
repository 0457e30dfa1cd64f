"""index posts by user and status, for filtered post lists

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 04:10:00.000000
"""

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.create_index('ix_post_user_status', ['user_id', 'status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_index('ix_post_user_status')
