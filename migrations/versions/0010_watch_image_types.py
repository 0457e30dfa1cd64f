"""watch image types: the image types a watch posts (NULL: its source's default)

Revision ID: 0010_watch_image_types
Revises: 0009
Create Date: 2026-11-25 05:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0010_watch_image_types'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_types', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.drop_column('image_types')
