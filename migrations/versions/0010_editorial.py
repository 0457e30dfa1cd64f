"""editorial control: review before publishing, posting schedules, notifications

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-25 03:10:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
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
