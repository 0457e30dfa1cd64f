"""editorial control: review before publishing, posting schedules, notifications

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 03:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notify_channel',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('label', sa.String(length=100), server_default='', nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notify_channel', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_channel_user_id'), ['user_id'], unique=False)
    op.create_table('notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('dedup_key', sa.String(length=200), nullable=False),
    sa.Column('title', sa.String(length=250), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'dedup_key')
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index('ix_notification_pending', ['status', 'user_id'], unique=False)
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approval', sa.String(length=20), server_default='auto', nullable=False))
        batch_op.add_column(sa.Column('review_ttl_hours', sa.Float(), server_default='72', nullable=False))
        batch_op.add_column(sa.Column('schedule_tz', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('schedule_windows', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('daily_cap', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('review_note', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('released_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('skip_schedule', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('caption', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('approved_by', sa.String(), nullable=True))
    with op.batch_alter_table('post_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('actor', sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_table('notification')
    op.drop_table('notify_channel')
    with op.batch_alter_table('post_event', schema=None) as batch_op:
        batch_op.drop_column('actor')
    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.drop_column('approved_by')
        batch_op.drop_column('caption')
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_column('skip_schedule')
        batch_op.drop_column('released_at')
        batch_op.drop_column('review_note')
        batch_op.drop_column('review_expires_at')
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.drop_column('daily_cap')
        batch_op.drop_column('schedule_windows')
        batch_op.drop_column('schedule_tz')
        batch_op.drop_column('review_ttl_hours')
        batch_op.drop_column('approval')
