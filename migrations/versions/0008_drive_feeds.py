"""drive feeds: one change feed per Drive connection, push channels, subfolder and shared-drive columns

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 03:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('include_subfolders', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('drive_id', sa.String(), nullable=True))
    op.create_table(
        'drive_feed',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('page_token', sa.Text(), nullable=True),
        sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_poll_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('lease_owner', sa.String(), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('connection_id'),
    )
    op.create_table(
        'drive_push_channel',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('channel_id', sa.String(length=64), nullable=False),
        sa.Column('resource_id', sa.String(), nullable=False),
        sa.Column('token', sa.Text(), nullable=False),
        sa.Column('address', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('channel_id'),
    )
    op.create_index('ix_drive_push_channel_connection_id', 'drive_push_channel', ['connection_id'])


def downgrade() -> None:
    op.drop_index('ix_drive_push_channel_connection_id', table_name='drive_push_channel')
    op.drop_table('drive_push_channel')
    op.drop_table('drive_feed')
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.drop_column('drive_id')
        batch_op.drop_column('include_subfolders')
