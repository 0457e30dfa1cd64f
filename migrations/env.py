"""Alembic environment: the engine comes from aiposter (``aiposter migrate``), or from $AIPOSTER_DB_URL."""

import os

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import aiposter.core.models  # noqa: F401  (registers the tables)

config = context.config
MIGRATION_LOCK = 0x61696D67  # an arbitrary constant key for pg_advisory_xact_lock
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = sa.create_engine(os.environ.get("AIPOSTER_DB_URL", "sqlite:///./data/aiposter.db"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas starting together: one migrates, the others wait here, then find nothing to do.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            context.run_migrations()
        connection.commit()


run_migrations_online()
