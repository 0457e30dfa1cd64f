"""Shared fixtures. Every test that takes ``db_url`` (or anything built on it) runs on SQLite and on
PostgreSQL. PostgreSQL comes from $AIPOSTER_TEST_PG (default: the local server at 127.0.0.1:5432, db
``test``, user ``postgres``); each xdist worker gets its own database. Without PostgreSQL the PG half is
skipped locally, and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiposter import db
from aiposter.config import Config

PG_ADMIN_URL = os.environ.get("AIPOSTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@contextmanager
def pg_scratch_database(name: str):
    """An empty PostgreSQL database named ``name`` for the block, dropped after it: yields its URL, or None
    with the reason when PostgreSQL is unreachable (callers skip, or fail under CI=true)."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            yield None, str(exc).splitlines()[0]
            return
        try:
            yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False), ""
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def require_pg(url: str | None, reason: str) -> str:
    """The URL, or skip (locally) / fail (under CI=true) when PostgreSQL is unreachable."""
    if url is None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {reason}")
        pytest.skip(f"PostgreSQL unreachable: {reason}")
    return url


@pytest.fixture(scope="session")
def _pg_database():
    """A migrated database for this worker, or None if PostgreSQL is unreachable."""
    # Unique per process: two test runs on one machine (or xdist workers) never share a database.
    with pg_scratch_database(f"aiposter_test_{_worker()}_{os.getpid()}") as (url, reason):
        if url is None:
            yield ("unavailable", reason)
            return
        engine = db.make_engine(url)
        db.migrate(engine)
        engine.dispose()
        yield ("ok", url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


def _truncate_all(url: str) -> None:
    from sqlmodel import SQLModel

    import aiposter.core.models  # noqa: F401

    engine = sa.create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, _sqlite_template) -> str:
    """A migrated, empty database URL."""
    if request.param == "sqlite":
        path = tmp_path / "aiposter.db"
        shutil.copyfile(_sqlite_template, path)
        return f"sqlite:///{path}"
    status, value = request.getfixturevalue("_pg_database")
    value = require_pg(value if status == "ok" else None, value)
    _truncate_all(value)
    return value


def make_config(tmp_path: Path, db_url: str, **sections) -> Config:
    """A test config: everything under tmp_path, fast retries, no settle delay, quickstart off."""
    data = {
        "db": {"url": db_url},
        "daemon": {"data_dir": str(tmp_path / "data"), "tick_seconds": 0.2, "lease_seconds": 30},
        "retry": {"base_delay_seconds": 0.05, "max_delay_seconds": 0.2},
        "watch_defaults": {"settle_seconds": 0.0, "interval_seconds": 5},
        "publishers": {"outbox": {"directory": str(tmp_path / "outbox")}},
        "quickstart": {"enabled": False},
        "api": {"enabled": False},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return Config.model_validate(data)


@pytest.fixture
def cfg(tmp_path, db_url) -> Config:
    return make_config(tmp_path, db_url)


@pytest.fixture
def app(cfg):
    from aiposter.app import open_app

    application = open_app(cfg, migrate=False)
    yield application
    application.close()


@pytest.fixture
def engine(app):
    return app.engine


@pytest.fixture
def ctx(app):
    from aiposter.core.pipeline import Context

    return Context(app.cfg, app.engine, owner=f"test-{uuid.uuid4().hex[:6]}", keyring=app.keyring)


@pytest.fixture
def make_ctx(tmp_path, db_url):
    """A pipeline context on its own config: ``make_ctx(images={"max_pixels": 10_000})``."""
    from aiposter.app import open_app
    from aiposter.core.pipeline import Context

    opened = []

    def factory(**sections):
        application = open_app(make_config(tmp_path, db_url, **sections), migrate=False)
        opened.append(application)
        return Context(application.cfg, application.engine, owner=f"test-{uuid.uuid4().hex[:6]}",
                       keyring=application.keyring)

    yield factory
    for application in opened:
        application.close()
