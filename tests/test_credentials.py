"""Credentials with a lifecycle: publishing respects a connection's status (a target whose account needs
re-authorization waits, without spending attempts, and goes the moment the account is reconnected), the
store loads, saves and marks, and Google access tokens are refreshed with google-auth against a loopback
token endpoint speaking Google's JSON."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from api.fakes import FakeOAuth, oauth_config
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, posts

from aiposter.core import credentials, registry, states
from aiposter.core.models import Connection, Pause, PostTarget, User, utcnow
from aiposter.crypto import connection_context
from aiposter.db import session_scope
from aiposter.publishers.outbox import OutboxPublisher
from aiposter.services import connections
from aiposter.services import posts as posts_svc
from aiposter.services.oauth import Account


class Page(OutboxPublisher):
    """The outbox standing in for a Facebook Page (the Meta publishers come with their issue)."""

    platform = "facebook"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def publish(self, req):
        self.calls += 1
        return super().publish(req)


def _connection(ctx, email: str, provider: str, secrets: dict, **fields) -> int:
    with session_scope(ctx.engine) as s:
        user = s.exec(select(User).where(User.email == email)).first()
        if user is None:
            user = User(email=email)
            s.add(user)
            s.flush()
        c = Connection(user_id=user.id, provider=provider, account_id=fields.pop("account_id", "p1"),
                       account_name=fields.pop("account_name", "Bakery"), **fields)
        s.add(c)
        s.flush()
        c.credentials = ctx.keyring.encrypt(json.dumps(secrets), context=connection_context(c.id))
        return c.id


def test_a_target_whose_account_needs_reauth_waits_and_goes_once_reconnected(ctx, tmp_path):
    cid = _connection(ctx, "ann@example.com", "facebook", {"access_token": "old"})
    # The watch is made while the account works (a target of an unusable account is refused, issue 10),
    # then the token is invalidated.
    def invalidate():
        with session_scope(ctx.engine) as s:
            c = s.get(Connection, cid)
            c.status, c.last_error = "needs_reauth", "Meta says the token was invalidated (code 190)"
    page = Page(ctx.cfg)
    with registry.override(registry.DESTINATION, "facebook", lambda deps: page):
        _test_reauth_waits(ctx, tmp_path, cid, page, invalidate)


def _test_reauth_waits(ctx, tmp_path, cid, page, invalidate):
    wid = add_watch(ctx, tmp_path / "in", targets=[f"facebook:{cid}"])
    invalidate()
    drain(ctx)
    write_image(tmp_path / "in", "p.jpg")
    make_due(ctx, wid)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHING and page.calls == 0
    with session_scope(ctx.engine) as s:
        t = s.exec(select(PostTarget)).one()
        assert (t.status, t.attempts, t.paused_by) == (states.T_PENDING, 0, f"connection:{cid}")
        why = posts_svc.waiting_for(s, s.get(type(p), p.id))
    assert "the facebook account Bakery needs to be reconnected: Meta says the token was invalidated" in why

    with session_scope(ctx.engine) as s:  # the user reconnects the Page (services.connections.store)
        connections.store(s, ctx.keyring, p.user_id, "facebook", [Account("p1", "Bakery", {"access_token": "new"},
                                                                          ["pages_manage_posts"])])
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED and page.calls == 1
    with session_scope(ctx.engine) as s:
        assert s.exec(select(Pause)).all() == []


def test_marking_a_connection_holds_and_releases_its_targets(ctx, tmp_path):
    cid = _connection(ctx, "ann@example.com", "facebook", {"access_token": "t"})
    store = credentials.CredentialStore(ctx.engine, ctx.keyring, ctx.cfg)
    page = Page(ctx.cfg)
    with registry.override(registry.DESTINATION, "facebook", lambda deps: page):
        _test_marking(ctx, tmp_path, cid, page, store)


def _test_marking(ctx, tmp_path, cid, page, store):
    wid = add_watch(ctx, tmp_path / "in", targets=[f"facebook:{cid}", "outbox"])
    store.mark(cid, "error", "the Page was unpublished")  # after the watch: its target was usable then
    drain(ctx)
    write_image(tmp_path / "in", "p.jpg")
    make_due(ctx, wid)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHING and page.calls == 0  # the outbox target went; facebook waits
    assert "has an error: the Page was unpublished" in p.last_error
    store.mark(cid, "active", None)
    drain(ctx)
    assert posts(ctx)[0].status == states.PUBLISHED and page.calls == 1


def test_the_store_loads_saves_encrypted_and_refuses_unknown_statuses(ctx):
    cid = _connection(ctx, "ann@example.com", "threads", {"access_token": "a"}, account_id="777",
                      account_name="ann.threads")
    store = credentials.CredentialStore(ctx.engine, ctx.keyring, ctx.cfg)
    creds = store.load(cid)
    assert (creds.provider, creds.account_name, creds.secrets, creds.status) == (
        "threads", "ann.threads", {"access_token": "a"}, "active")
    later = utcnow() + timedelta(days=60)
    store.save(cid, {"access_token": "b"}, expires_at=later)
    with session_scope(ctx.engine) as s:
        c = s.get(Connection, cid)
        assert c.credentials.startswith("v1:") and "access_token" not in c.credentials  # ciphertext only
        assert abs((c.token_expires_at - later).total_seconds()) < 1
    assert store.load(cid).secrets == {"access_token": "b"}
    with pytest.raises(ValueError, match="unknown connection status"):
        store.mark(cid, "expired-ish", "x")
    with pytest.raises(credentials.CredentialsError) as info:
        store.load(cid + 1000)
    assert info.value.code == "no_connection"


# --------------------------------------------------------------------------- Google refresh


@pytest.fixture
def google(ctx, monkeypatch):
    fake = FakeOAuth()
    for key, value in oauth_config(fake.url)["google"].items():
        setattr(ctx.cfg.oauth.google, key, value if key != "client_secret" else _secret(value))
    yield fake
    fake.close()


def _secret(value):
    from pydantic import SecretStr

    return SecretStr(value)


def _drive_connection(ctx, google, expires_in: timedelta, account_id: str = "g-42") -> tuple[int, str]:
    refresh = google._token("google-refresh")
    expiry = utcnow() + expires_in
    cid = _connection(ctx, "ann@example.com", "google_drive", {
        "token": google._token("google"), "refresh_token": refresh, "token_uri": "https://wrong.example/token",
        "client_id": "google-client", "scopes": ["https://www.googleapis.com/auth/drive.readonly"],
        "expiry": expiry.isoformat()}, account_id=account_id, account_name="ann@gmail.example")
    return cid, refresh


def test_google_access_tokens_are_refreshed_by_housekeeping(ctx, google):
    cid, refresh = _drive_connection(ctx, google, timedelta(minutes=2))
    _drive_connection(ctx, google, timedelta(minutes=50), account_id="g-43")  # still fresh: left alone
    store = credentials.CredentialStore(ctx.engine, ctx.keyring, ctx.cfg)
    before = store.load(cid).secrets
    assert credentials.refresh_due(store) == {"refreshed": 1, "needs_reauth": 0, "failed": 0}
    after = store.load(cid).secrets
    assert after["token"] != before["token"] and google.tokens[after["token"]] == "google"
    assert after["refresh_token"] == refresh
    assert after["expiry"] > (utcnow() + timedelta(minutes=55)).isoformat()
    assert ("POST", "/google/token") in google.calls  # the configured token_uri, not the stored one
    with session_scope(ctx.engine) as s:
        c = s.get(Connection, cid)
        assert (c.status, c.token_expires_at) == ("active", None)
    assert credentials.refresh_due(store)["refreshed"] == 0  # nothing due any more


def test_a_revoked_google_refresh_token_marks_the_connection_needs_reauth(ctx, google):
    cid, refresh = _drive_connection(ctx, google, timedelta(minutes=-5))
    google.revoked.add(refresh)
    store = credentials.CredentialStore(ctx.engine, ctx.keyring, ctx.cfg)
    assert credentials.refresh_due(store)["needs_reauth"] == 1
    with session_scope(ctx.engine) as s:
        c = s.get(Connection, cid)
        assert c.status == "needs_reauth"
        assert "invalid_grant" in c.last_error and "Token has been expired or revoked" in c.last_error
        pause = s.exec(select(Pause)).one()
        assert pause.scope == f"connection:{cid}" and "reconnect" in pause.reason
    assert credentials.unusable_reason(c).startswith("the google_drive account ann@gmail.example needs to be")
    assert credentials.refresh_due(store)["needs_reauth"] == 0  # not retried while it needs the user
