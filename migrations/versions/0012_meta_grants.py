"""meta grants: the Pages/Instagram accounts a Facebook Login granted, until the user picks

Revision ID: 0012_meta_grants
Revises: 0011_watch_fit
Create Date: 2026-11-25 05:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0012_meta_grants'
down_revision = '0011_watch_fit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('meta_grant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(), nullable=False),
    sa.Column('candidates', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('meta_grant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_meta_grant_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('meta_grant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_meta_grant_user_id'))

    op.drop_table('meta_grant')
