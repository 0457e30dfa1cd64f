"""publish seams: a media store key per post, multi-step publishing state per target

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 09:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The post's image is a key in the media store (shared by replicas), not a path on one machine. Keys
    # are "<post id>.jpg", which is what the old paths ended with.
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_key', sa.String(), nullable=True))
    op.execute("UPDATE post SET media_key = CAST(id AS VARCHAR) || '.jpg' WHERE media_path IS NOT NULL")
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_column('media_path')

    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('handle', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('step_started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempt_started_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('pending_since', sa.DateTime(timezone=True), nullable=True))
    # A target left "publishing" by the old code was in flight: it must be reconciled before any re-send.
    op.execute("UPDATE post_target SET step_started_at = updated_at, attempt_started_at = updated_at "
               "WHERE status = 'publishing'")


def downgrade() -> None:
    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.drop_column('pending_since')
        batch_op.drop_column('attempt_started_at')
        batch_op.drop_column('step_started_at')
        batch_op.drop_column('handle')
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.add_column(sa.Column('media_path', sa.String(), nullable=True))
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_column('media_key')
