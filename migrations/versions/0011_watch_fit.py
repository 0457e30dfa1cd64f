"""per-watch fit: how an image outside a destination's aspect range is brought into it (pad | crop)

Revision ID: 0011_watch_fit
Revises: 0010_watch_image_types
Create Date: 2026-11-25 05:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0011_watch_fit'
down_revision = '0010_watch_image_types'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fit', sa.String(length=10), server_default='pad', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('watch', schema=None) as batch_op:
        batch_op.drop_column('fit')
