"""source identity: content hash per post, baseline time and admin-chosen folder per watch

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        # Existing watches are not grandfathered: a folder outside its owner's roots now needs an admin
        # to confirm it (`aiposter watch edit ID --folder PATH`); the quickstart watch is confirmed at start.
        batch_op.add_column(sa.Column('folder_set_by_admin', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('baseline_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))
        batch_op.create_index('ux_post_watch_content', ['watch_id', 'content_hash'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_index('ux_post_watch_content')
        batch_op.drop_column('content_hash')
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.drop_column('baseline_at')
        batch_op.drop_column('folder_set_by_admin')
