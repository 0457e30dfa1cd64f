"""Engines, sessions, migrations and the single-process lock for SQLite."""

from __future__ import annotations

import fcntl
import os
import select
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from aiposter.config import ConfigError


def is_sqlite(engine_or_url) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def check_url(url: str) -> None:
    """Fail early, as a config error, on a DB URL that cannot work."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError("[db] url: not a database URL (expected sqlite:///PATH or "
                          "postgresql+psycopg://USER@HOST/DB)") from None
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"[db] url: unsupported database {backend!r} (use sqlite or postgresql+psycopg)")
    if backend == "postgresql" and u.get_driver_name() not in ("psycopg",):
        raise ConfigError("[db] url: use the psycopg 3 driver: postgresql+psycopg://...")
    path = sqlite_path(url)
    if path is not None:
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"[db] url: database file {path} is not readable and writable")
        # The directory may not exist yet (run and migrate create it): the nearest existing one must be writable.
        parent = path.parent if str(path.parent) else Path(".")
        existing = parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"[db] url: cannot create directory {parent}: {existing} is not a directory")
        if not os.access(existing, os.W_OK):
            raise ConfigError(f"[db] url: directory {existing} is not writable")


def describe(url: str) -> str:
    """The database as an operator recognises it: an absolute file path, or the URL without password."""
    path = sqlite_path(url)
    if path is not None:
        return f"SQLite {path.resolve()}"
    return make_url(url).render_as_string(hide_password=True)


def ids_in(column, ids, engine: Engine):
    """``column IN ids`` for a batch: on PostgreSQL ``column = ANY(:ids)``, one bound array, so the statement's
    text is the same whatever the number of ids and psycopg prepares it once used ``prepare_threshold``
    times (an expanding ``IN`` is a new statement for each batch size: parsed and planned every time,
    0.9 ms of client and 0.8 ms of server CPU for 70-100 ids, against 0.4 and 0.3). SQLite keeps ``IN``."""
    if is_sqlite(engine):
        return column.in_(ids)
    from sqlalchemy.dialects.postgresql import ARRAY

    return column == sa.any_(sa.bindparam(None, list(ids), type_=ARRAY(column.type), unique=True))


def has_schema(engine: Engine) -> bool:
    """Whether this database was ever migrated (an empty PostgreSQL database or a new SQLite file is not)."""
    return sa.inspect(engine).has_table("alembic_version")


def make_engine(url: str, pool_size: int = 5, echo: bool = False) -> Engine:
    if is_sqlite(url):
        engine = sa.create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=False,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every SQLite test
            dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover
            # IMMEDIATE: take the write lock up front so concurrent writers queue instead of deadlocking.
            # A read-only unit (read_scope) begins DEFERRED: in WAL mode it reads a snapshot without any lock,
            # beside the one writer.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip on every checkout: 85 us of client and 40 us of server CPU, 165 us of wall
    # time per transaction). Instead a pooled connection is checked without a round trip when it is checked
    # out (``_server_hung_up``), and a connection that dies while in use invalidates itself (SQLAlchemy's
    # ``is_disconnect``): that unit of work fails with ``connection_lost`` and is redone (daemon.py).
    # LIFO: an idle daemon keeps reusing the same few connections (the others are recycled), so psycopg
    # prepares its statements sooner; ``pool_recycle`` replaces a connection after an hour, so one dropped
    # silently by a firewall or a proxy is not kept for ever.
    engine = sa.create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False,
                              pool_use_lifo=True, pool_recycle=RECYCLE_SECONDS)

    @sa.event.listens_for(engine, "checkout")
    def _check(dbapi_conn, _record, _proxy):
        if _server_hung_up(dbapi_conn):
            # The pool replaces it with a new connection and runs this check again (SQLAlchemy retries).
            raise sa.exc.DisconnectionError("the server closed this pooled connection")

    return engine


RECYCLE_SECONDS = 3600


def _server_hung_up(dbapi_conn) -> bool:
    """Whether the server closed this idle psycopg connection, without a round trip: a pooled connection
    has read every reply, so anything readable on its socket is the server's goodbye (a restart, a
    ``pg_terminate_backend``, ``idle_session_timeout``: a FATAL message and end of file). A peer that
    vanished without a word (a dropped network) is not seen here: the first statement fails instead."""
    if dbapi_conn.closed or dbapi_conn.broken:
        return True
    try:
        fd = dbapi_conn.fileno()
    except Exception:  # noqa: BLE001 - psycopg: "the connection is lost"
        return True
    poller = select.poll()  # not select.select: no FD_SETSIZE limit
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the database connection failing rather than the work: one that died in use (the
    server restarted, the backend was terminated, the network dropped; SQLAlchemy has invalidated it), or
    none could be made (the server is down or restarting; ``statement`` is None). The unit of work that
    met it can simply be redone from its last committed state."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    return bool(exc.connection_invalidated) or (isinstance(exc, sa.exc.OperationalError) and exc.statement is None)


def describe_error(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's SQL echo and background link."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__module__}.{type(orig).__name__}: {text}" if text else type(orig).__name__


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


READ_ONLY = "aiposter_read_only"


@contextmanager
def read_scope(engine: Engine) -> Iterator[sa.Connection]:
    """A read-only unit of work on a pooled connection: one snapshot, no write lock, no ORM session.

    On SQLite it begins a deferred transaction (reads never queue behind the writer in WAL mode), and it
    takes no in-process write gate. Writing through it is a bug: SQLite would upgrade the lock mid-way."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        yield conn


def read_one(engine: Engine, statement) -> sa.Row | None:
    """The first row of one read-only statement. On PostgreSQL it runs outside a transaction block (a
    single statement is its own snapshot), saving the BEGIN and COMMIT round trips; on SQLite it is a
    :func:`read_scope` (a deferred snapshot, no write lock)."""
    if is_sqlite(engine):
        with read_scope(engine) as conn:
            return conn.execute(statement).first()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(statement).first()


# --------------------------------------------------------------------------- migrations


def migrations_dir() -> Path:
    return Path(str(resources.files("aiposter.migrations")))


def alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    command.upgrade(alembic_config(engine), "head")


def pending_migrations(engine: Engine) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    heads = set(script.get_heads())
    if current == heads:
        return []
    pending = []
    for rev in script.walk_revisions():
        if rev.revision in current:
            break
        pending.append(rev.revision)
    return pending


# --------------------------------------------------------------------------- single-process lock


class AlreadyRunning(Exception):
    pass


class ProcessLock:
    """An exclusive flock beside the SQLite file: a second daemon on the same file refuses to start."""

    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fh = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise AlreadyRunning(
                f"another aiposter is already running on {self.path.with_suffix('')} "
                f"(lock {self.path} held by pid {holder}); stop it first, or use PostgreSQL to run replicas"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
