"""pauses shared by all replicas; posts and targets record the pause holding them; Google connections
no longer carry the one-hour access-token expiry as the connection's expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 09:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pause',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('connection_id', sa.Integer(), nullable=True),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('code', sa.String(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(), nullable=True),
    sa.Column('probe_owner', sa.String(), nullable=True),
    sa.Column('probe_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['connection.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope')
    )
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_by', sa.String(), nullable=True))
        batch_op.create_index(batch_op.f('ix_post_paused_by'), ['paused_by'], unique=False)
    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_by', sa.String(), nullable=True))
        batch_op.create_index(batch_op.f('ix_post_target_paused_by'), ['paused_by'], unique=False)

    # Repair Google connections: their stored expiry was the access token's (one hour), which flagged
    # every Drive connection "expiring", then "expired; reconnect", although the refresh token is fine.
    connection = sa.table('connection', sa.column('provider', sa.String), sa.column('status', sa.String),
                          sa.column('token_expires_at', sa.DateTime(timezone=True)),
                          sa.column('last_error', sa.Text))
    op.execute(connection.update().where(connection.c.provider == 'google_drive',
                                         connection.c.status.in_(('expiring', 'expired')))
               .values(status='active', last_error=None))
    op.execute(connection.update().where(connection.c.provider == 'google_drive')
               .values(token_expires_at=None))


def downgrade() -> None:
    with op.batch_alter_table('post_target', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_post_target_paused_by'))
        batch_op.drop_column('paused_by')
    with op.batch_alter_table('post', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_post_paused_by'))
        batch_op.drop_column('paused_by')
    op.drop_table('pause')
