"""Storage: migrations match the models, credentials are encrypted with rotatable keys, one daemon per
SQLite file, and concurrent workers never claim the same row."""

from __future__ import annotations

import os
import stat
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import make_config
from sqlmodel import SQLModel

from aiposter import crypto, db
from aiposter.config import ConfigError
from aiposter.core import queue as workqueue
from aiposter.core.models import Connection, Post, User, Watch
from aiposter.db import session_scope


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
    assert diff == []
    assert db.pending_migrations(engine) == []


def test_sqlite_uses_wal(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path}/x.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_second_daemon_on_same_sqlite_file_refuses(tmp_path):
    path = tmp_path / "a.db"
    first = db.ProcessLock(path)
    first.acquire()
    try:
        with pytest.raises(db.AlreadyRunning, match=f"already running on {path}.*pid {os.getpid()}"):
            db.ProcessLock(path).acquire()
    finally:
        first.release()
    again = db.ProcessLock(path)
    again.acquire()  # released locks can be taken again
    again.release()


@pytest.mark.parametrize("url,message", [
    ("mysql://x/y", "unsupported database"),
    ("postgresql+psycopg2://u@h/d", "psycopg 3 driver"),
    ("not a url", "not a database URL"),
])
def test_bad_db_urls(url, message):
    with pytest.raises(ConfigError, match=message):
        db.check_url(url)


def test_plain_postgresql_url_uses_psycopg3():
    db.check_url("postgresql://u@h/d")  # SQLAlchemy 2.1 maps it to psycopg 3


def test_sqlite_path_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"\[db\] url: cannot create directory .*afile"):
        db.check_url(f"sqlite:///{tmp_path}/afile/x.db")


def test_unwritable_sqlite_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores permissions")
        with pytest.raises(ConfigError, match="not writable"):
            db.check_url(f"sqlite:///{ro}/x.db")
    finally:
        ro.chmod(0o700)


# --------------------------------------------------------------------------- encryption


def test_roundtrip_and_ciphertext_format():
    ring = crypto.Keyring(crypto.new_key())
    token = ring.encrypt("refresh-token-123", context="connection:1")
    assert token.startswith(f"v1:{ring.active.kid}:")
    assert "refresh-token-123" not in token
    assert ring.decrypt(token, context="connection:1") == "refresh-token-123"
    with pytest.raises(crypto.DecryptError):
        ring.decrypt(token, context="connection:2")  # bound to its row


def test_rotation_keeps_old_ciphertexts_readable():
    old, new = crypto.new_key(), crypto.new_key()
    token = crypto.Keyring(old).encrypt("t")
    ring = crypto.Keyring(new, previous=[old])
    assert ring.decrypt(token) == "t"
    assert crypto.key_id_of(ring.encrypt("t")) == new.kid
    with pytest.raises(crypto.DecryptError, match="not configured"):
        crypto.Keyring(new).decrypt(token)


def test_parse_key_errors():
    with pytest.raises(ConfigError, match="KEYID:BASE64"):
        crypto.parse_key("nonsense", "x")
    with pytest.raises(ConfigError, match="32 bytes"):
        crypto.parse_key("k1:AAAA", "x")


def _store_credential(engine, ring):
    with session_scope(engine) as s:
        u = User(email="c@example.com")
        s.add(u)
        s.flush()
        c = Connection(user_id=u.id, provider="google_drive", account_id="a")
        s.add(c)
        s.flush()
        c.credentials = ring.encrypt("secret", context=crypto.connection_context(c.id))


def test_embedded_key_created_once_with_0600(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url)
    engine = db.make_engine(db_url)
    try:
        ring = crypto.load_keyring(cfg, engine)
        keyfile = cfg.data_dir / crypto.KEY_FILE_NAME
        assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
        content = keyfile.read_text()
        _store_credential(engine, ring)
        again = crypto.load_keyring(cfg, engine)
        assert again.active == ring.active and keyfile.read_text() == content  # never replaced

        keyfile.unlink()  # lost key with data in the DB: refuse, do not make a new one
        with pytest.raises(ConfigError, match="restore it from your backup"):
            crypto.load_keyring(cfg, engine)
        assert not keyfile.exists()
    finally:
        engine.dispose()


def test_configured_key_missing_or_wrong_refuses(tmp_path, db_url):
    engine = db.make_engine(db_url)
    try:
        missing = make_config(tmp_path, db_url, security={"encryption_key_file": str(tmp_path / "none.key")})
        with pytest.raises(ConfigError, match=r"does not exist; .*aiposter keys new"):
            crypto.load_keyring(missing, engine)

        key = crypto.new_key()
        cfg = make_config(tmp_path, db_url, security={"encryption_key": key.encode()})
        _store_credential(engine, crypto.load_keyring(cfg, engine))

        other = make_config(tmp_path, db_url, security={"encryption_key": crypto.new_key().encode()})
        with pytest.raises(ConfigError, match=f"encrypted with key {key.kid}"):
            crypto.load_keyring(other, engine)

        same_id_wrong_value = crypto.Key(key.kid, os.urandom(32)).encode()
        wrong = make_config(tmp_path, db_url, security={"encryption_key": same_id_wrong_value})
        with pytest.raises(ConfigError, match="wrong value"):
            crypto.load_keyring(wrong, engine)

        rotated = make_config(tmp_path, db_url, security={"encryption_key": crypto.new_key().encode(),
                                                            "previous_encryption_keys": [key.encode()]})
        crypto.load_keyring(rotated, engine)  # old key listed: starts fine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the queue


def _queue_posts(engine, n: int) -> None:
    with session_scope(engine) as s:
        u = User(email="q@example.com")
        s.add(u)
        s.flush()
        w = Watch(user_id=u.id, folder="/tmp")
        s.add(w)
        s.flush()
        for i in range(n):
            s.add(Post(user_id=u.id, watch_id=w.id, source_ref=f"f{i}"))


def test_concurrent_claims_never_overlap(app):
    engine = app.engine
    _queue_posts(engine, 60)
    claimed: dict[str, list[int]] = {}
    errors = []

    def worker(name):
        mine = claimed.setdefault(name, [])
        try:
            for _ in range(40):
                with session_scope(engine) as s:
                    mine += workqueue.claim_posts(s, name, 60, 3)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    all_ids = [i for ids in claimed.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 60
    with session_scope(engine) as s:
        owners = dict(s.execute(sa.select(Post.id, Post.lease_owner)).all())
    assert all(owners[i] == name for name, ids in claimed.items() for i in ids)


def test_expired_lease_can_be_reclaimed_and_renewal_prevents_it(app):
    from datetime import timedelta

    from aiposter.core.models import utcnow

    engine = app.engine
    _queue_posts(engine, 1)
    with session_scope(engine) as s:
        assert len(workqueue.claim_posts(s, "dead", 5, 10)) == 1
    with session_scope(engine) as s:
        assert workqueue.claim_posts(s, "alive", 5, 10) == []
    later = utcnow() + timedelta(seconds=10)
    with session_scope(engine) as s:
        assert len(workqueue.claim_posts(s, "alive", 5, 10, now=later)) == 1
    with session_scope(engine) as s:
        assert workqueue.renew(s, "alive", 60, now=later) == 1
    with session_scope(engine) as s:
        assert workqueue.claim_posts(s, "third", 5, 10, now=later + timedelta(seconds=30)) == []


def test_expiring_and_expired_tokens_are_flagged_once(app, caplog):
    from datetime import timedelta

    from aiposter.core.daemon import flag_tokens
    from aiposter.core.models import utcnow
    from aiposter.core.pipeline import Context

    now = utcnow()
    with session_scope(app.engine) as s:
        u = User(email="t@example.com")
        s.add(u)
        s.flush()
        for account, expires in (("soon", now + timedelta(days=2)), ("gone", now - timedelta(hours=1)),
                                 ("fine", now + timedelta(days=50)), ("never", None)):
            s.add(Connection(user_id=u.id, provider="threads", account_id=account, token_expires_at=expires))
    ctx = Context(app.cfg, app.engine, owner="t")
    with caplog.at_level("WARNING"):
        flag_tokens(ctx)
        flag_tokens(ctx)  # a second pass changes nothing and logs nothing
    with session_scope(app.engine) as s:
        got = {c.account_id: (c.status, c.last_error) for c in s.exec(sa.select(Connection)).scalars()}
    assert got["soon"][0] == "expiring" and "reconnect the account before then" in got["soon"][1]
    assert got["gone"][0] == "expired" and "expired at" in got["gone"][1]
    assert got["fine"] == ("active", None) and got["never"] == ("active", None)
    assert sorted(r.getMessage() for r in caplog.records) == ["connection.expired", "connection.expiring"]


def test_migration_0005_repairs_google_connections_flagged_by_the_access_token_expiry(engine):
    """Rows written before the fix carry the access token's expiry and were flagged expiring/expired."""
    from datetime import timedelta

    from alembic import command
    from alembic.script import ScriptDirectory

    from aiposter.core.models import utcnow

    config = db.alembic_config(engine)
    before = ScriptDirectory.from_config(config).get_revision("0005").down_revision
    command.downgrade(config, before)
    try:
        soon = utcnow() + timedelta(minutes=40)
        with engine.begin() as conn:
            uid = conn.execute(sa.text("INSERT INTO user_account (email, display_name, role, disabled, "
                                       "processing_paused, brand_voice, default_hashtags, created_at, updated_at) "
                                       "VALUES ('m@example.com', '', 'user', false, false, '', '[]', :t, :t) "
                                       "RETURNING id"), {"t": utcnow()}).scalar_one()
            for account, provider, status in (("g1", "google_drive", "expired"), ("g2", "google_drive", "expiring"),
                                               ("g3", "google_drive", "active"), ("t1", "threads", "expiring")):
                conn.execute(sa.text(
                    "INSERT INTO connection (user_id, provider, account_id, account_name, scopes, "
                    "token_expires_at, status, last_error, created_at, updated_at) VALUES (:u, :p, :a, '', '', "
                    ":e, :s, :err, :t, :t)"), {"u": uid, "p": provider, "a": account, "e": soon, "s": status,
                                               "err": "reconnect the account", "t": utcnow()})
    finally:
        command.upgrade(config, "head")
    with session_scope(engine) as s:
        rows = {c.account_id: c for c in s.exec(sa.select(Connection)).scalars()}
    for account in ("g1", "g2", "g3"):
        assert (rows[account].status, rows[account].token_expires_at) == ("active", None)
    assert rows["g1"].last_error is None and rows["g2"].last_error is None
    assert rows["t1"].status == "expiring" and rows["t1"].token_expires_at is not None  # a real expiry stays
