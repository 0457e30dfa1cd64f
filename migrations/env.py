"""Alembic environment: the engine comes from aiposter (``aiposter migrate``), or from $AIPOSTER_DB_URL."""

import os

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import aiposter.core.models  # noqa: F401  (registers the tables)

config = context.config
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
            context.run_migrations()
        connection.commit()


run_migrations_online()
