"""Start-up shared by every command: config checks, engine, single-process lock, migrations, keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import select

from aiposter import crypto, db
from aiposter.config import Config, ConfigError
from aiposter.core import queue as workqueue
from aiposter.core.media import MediaStore, store_for
from aiposter.core.models import Watch
from aiposter.db import session_scope
from aiposter.logs import fields

log = logging.getLogger("aiposter")
QUICKSTART_LOCK = 0x61697073  # an arbitrary constant key for pg_advisory_xact_lock


@dataclass
class App:
    cfg: Config
    engine: Engine
    keyring: crypto.Keyring | None = None
    media: MediaStore | None = None
    lock: db.ProcessLock | None = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
        self.engine.dispose()


class NoDatabase(ConfigError):
    """The configured database does not exist, in a command that must not create one."""


def open_app(cfg: Config, *, migrate: bool = True, lock: bool = False, keys: bool = True,
             require_current: bool = False, create: bool = True) -> App:
    """Open the database the config names. ``lock``: this is the daemon (one per SQLite file).
    ``require_current``: without migrating, refuse a schema that is behind (``run --no-migrate``).
    ``create``: a missing database (SQLite file, or a PostgreSQL database never migrated) may be created;
    without it (every CLI command but run and migrate) a missing one is :class:`NoDatabase`, so that a
    command run from the wrong directory does not quietly make a new, empty install there."""
    url = cfg.db_url
    db.check_url(url)
    path = db.sqlite_path(url)
    if not create and path is not None and not path.exists():
        raise NoDatabase(_no_database(cfg))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"[db] url: cannot create directory {path.parent}: {exc.strerror}") from None
    if create:
        for key, folder in (("[daemon] data_dir", cfg.data_dir), ("[media] directory", cfg.media_dir)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{key}: cannot create {folder}: {exc.strerror}") from None
    engine = db.make_engine(url, pool_size=cfg.db.pool_size + cfg.daemon.workers, echo=cfg.db.echo)
    app = App(cfg, engine, media=store_for(cfg))
    try:
        if not create and not db.has_schema(engine):
            raise NoDatabase(_no_database(cfg))
        if lock and path is not None:
            app.lock = db.ProcessLock(path)
            app.lock.acquire()
        if migrate:
            db.migrate(engine)
        elif require_current:
            pending = db.pending_migrations(engine)
            if pending:
                raise ConfigError(f"{len(pending)} database migration(s) pending; run `aiposter migrate` "
                                  "or start without --no-migrate")
        if keys:
            app.keyring = crypto.load_keyring(cfg, engine)
        if lock and path is not None:
            # We hold the file lock, so no other worker exists: leases left by a crash are stale.
            with session_scope(engine) as s:
                n = workqueue.release_all(s)
            if n:
                log.info("daemon.leases_released", extra=fields(count=n))
    except BaseException:
        app.close()
        raise
    return app


def _no_database(cfg: Config) -> str:
    origin = cfg.origin(("db", "url"))
    return (f"no database at {db.describe(cfg.db_url)} ([db] url from "
            f"{'the built-in default' if origin == 'default' else origin}; config: "
            f"{cfg.source}; working directory {Path.cwd()}). Run this command where the daemon runs, or give "
            "its config with --config or $AIPOSTER_CONFIG; `aiposter migrate` creates a new database")


def ensure_quickstart(app: App) -> Watch | None:
    """The embedded-defaults watch: an inbox folder whose photos go to the outbox."""
    qs = app.cfg.quickstart
    if not qs.enabled:
        return None
    from aiposter.services import Invalid, users, watches

    inbox = Path(qs.inbox).expanduser().resolve()
    inbox.mkdir(parents=True, exist_ok=True)
    with session_scope(app.engine) as s:
        if not db.is_sqlite(app.engine):
            # Replicas starting together: one creates the owner and watch, the others then find them.
            s.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": QUICKSTART_LOCK})
        try:
            owner = users.get_user_by_email(s, qs.owner_email)
        except users.NotFound:
            owner = users.create_user(s, qs.owner_email, display_name="Owner", role="admin")
        existing = s.exec(select(Watch).where(Watch.user_id == owner.id, Watch.name == "quickstart")).first()
        if existing is not None:
            if existing.folder == str(inbox) and not existing.folder_set_by_admin:
                existing.folder_set_by_admin = True  # the operator's own inbox, from the config file
            return existing
        try:
            w = watches.create_watch(s, app.cfg, owner, watches.WatchSpec(
                folder=str(inbox), name="quickstart", interval_seconds=qs.interval_seconds,
                targets=["outbox"], backfill=qs.backfill), allow_any_folder=True)
        except Invalid as exc:
            raise ConfigError(f"[quickstart] {exc.field or ''}: {exc.message}") from None
        outbox = Path(app.cfg.publishers.outbox.directory).resolve()
        log.info("quickstart.ready", extra=fields(inbox=str(inbox), outbox=str(outbox), watch_id=w.id))
        return w
