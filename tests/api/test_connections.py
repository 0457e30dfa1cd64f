"""Connecting accounts through OAuth against loopback fakes; disconnecting deletes the tokens at once."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import sqlalchemy as sa

from aiposter.core.models import Connection, OAuthState, utcnow
from aiposter.crypto import connection_context
from aiposter.db import session_scope

from .fakes import BAKERY, DRIVE_SCOPE, GARAGE


def start(client, person, provider):
    r = client.post(f"/api/v1/connections/{provider}/start", headers=person.headers)
    assert r.status_code == 200, r.text
    return r.json()


def stored(application, user_id):
    with session_scope(application.engine) as s:
        rows = list(s.exec(sa.select(Connection).where(Connection.user_id == user_id)
                           .order_by(Connection.id)).scalars())
    return {c.account_id: (c, json.loads(application.keyring.decrypt(c.credentials, connection_context(c.id))))
            for c in rows}


def test_google_drive_with_pkce(client, application, ann, fake_oauth):
    s = start(client, ann, "google_drive")
    q = {k: v[0] for k, v in parse_qs(urlparse(s["authorize_url"]).query).items()}
    assert s["redirect_uri"] == "https://poster.example/api/v1/connections/google_drive/callback"
    assert q["scope"] == DRIVE_SCOPE and q["code_challenge_method"] == "S256"
    assert q["access_type"] == "offline" and q["state"] == s["state"]
    code, state = fake_oauth.approve(s["authorize_url"])
    r = client.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
    assert r.status_code == 200, r.text
    [conn] = r.json()
    assert (conn["provider"], conn["account_id"], conn["account_name"]) == ("google_drive", "g-42",
                                                                            "ann@gmail.example")
    assert conn["scopes"] == [DRIVE_SCOPE] and "token" not in json.dumps(r.json()).replace("token_expires", "")
    c, creds = stored(application, ann.id)["g-42"]
    assert creds["refresh_token"].startswith("google-refresh-") and creds["token"].startswith("google-")
    assert "client_secret" not in creds
    assert creds["refresh_token"] not in c.credentials  # ciphertext only


def test_state_is_single_use_and_bound_to_the_provider(client, ann, fake_oauth):
    s = start(client, ann, "google_drive")
    code, state = fake_oauth.approve(s["authorize_url"])
    r = client.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and r.json()["error"]["code"] == "oauth_failed"
    assert client.get("/api/v1/connections/google_drive/callback",
                      params={"code": code, "state": state}).status_code == 200
    again = client.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
    assert again.status_code == 400 and "already used" in again.json()["error"]["message"]


def test_a_wrong_pkce_verifier_fails(client, application, ann, fake_oauth):
    s = start(client, ann, "google_drive")
    code, state = fake_oauth.approve(s["authorize_url"].replace("code_challenge=", "code_challenge=x"))
    r = client.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and "refused" in r.json()["error"]["message"]
    assert stored(application, ann.id) == {}


def test_expired_state_fails(client, application, ann, fake_oauth):
    s = start(client, ann, "threads")
    code, state = fake_oauth.approve(s["authorize_url"])
    with session_scope(application.engine) as ses:
        ses.execute(sa.update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.get("/api/v1/connections/threads/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and "expired" in r.json()["error"]["message"]


def test_finish_checks_the_state_belongs_to_the_caller(client, application, ann, bob, fake_oauth):
    s = start(client, ann, "threads")
    code, state = fake_oauth.approve(s["authorize_url"])
    r = client.post("/api/v1/connections/threads/finish", headers=bob.headers, json={"state": state, "code": code})
    assert r.status_code == 400 and stored(application, bob.id) == {}
    r = client.post("/api/v1/connections/threads/finish", headers=ann.headers, json={"state": state, "code": code})
    assert r.status_code == 200, r.text
    [conn] = r.json()
    assert (conn["account_id"], conn["account_name"]) == ("777", "ann.threads")
    _, creds = stored(application, ann.id)["777"]
    assert creds["access_token"].startswith("th-long-")
    expires = conn["token_expires_at"]
    assert expires and expires > (utcnow() + timedelta(days=59)).isoformat()


@pytest.mark.parametrize(("provider", "accounts"), [("facebook", {"p1": "Bakery"}),
                                                    ("instagram", {"ig1": "bakery.ig"})])
def test_meta_connects_the_one_page_or_instagram_account_granted(client, application, ann, fake_oauth, meta_pages,
                                                                 provider, accounts):
    """One account granted: connected at once (several wait for the user's choice: test_grants.py)."""
    meta_pages(BAKERY, GARAGE) if provider == "instagram" else meta_pages(BAKERY)
    s = start(client, ann, provider)
    assert "pages_manage_posts" in s["authorize_url"] or "instagram_content_publish" in s["authorize_url"]
    code, state = fake_oauth.approve(s["authorize_url"])
    r = client.get(f"/api/v1/connections/{provider}/callback", params={"code": code, "state": state})
    assert r.status_code == 200, r.text
    assert {c["account_id"]: c["account_name"] for c in r.json()} == accounts
    for _account, (_c, creds) in stored(application, ann.id).items():
        assert creds["access_token"].startswith("page-")  # the Page token, from the long-lived user token
    # Connecting again refreshes the same rows instead of adding new ones.
    code, state = fake_oauth.approve(start(client, ann, provider)["authorize_url"])
    client.get(f"/api/v1/connections/{provider}/callback", params={"code": code, "state": state})
    assert len(client.get("/api/v1/connections", headers=ann.headers).json()) == len(accounts)


def test_denied_consent_is_reported(client, ann):
    s = start(client, ann, "facebook")
    r = client.get("/api/v1/connections/facebook/callback",
                   params={"state": s["state"], "error": "access_denied", "error_description": "User said no"})
    assert r.status_code == 400 and "User said no" in r.json()["error"]["message"]


def test_an_unconfigured_provider_is_a_clear_error(client, application, ann):
    application.cfg.oauth.meta.app_id = ""
    r = client.post("/api/v1/connections/facebook/start", headers=ann.headers)
    assert r.status_code == 422 and "oauth.meta" in r.json()["error"]["message"]
    assert client.post("/api/v1/connections/myspace/start", headers=ann.headers).status_code == 422


def test_disconnect_deletes_the_tokens_and_the_targets_using_them(client, application, ann, fake_oauth, photos,
                                                                  meta_pages):
    meta_pages(BAKERY)
    code, state = fake_oauth.approve(start(client, ann, "facebook")["authorize_url"])
    conns = client.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state}).json()
    cid = conns[0]["id"]
    w = client.post("/api/v1/watches", headers=ann.headers,
                    json={"folder": str(photos), "targets": ["outbox", f"facebook:{cid}"]}).json()
    assert client.delete(f"/api/v1/connections/{cid}", headers=ann.headers).status_code == 200
    with session_scope(application.engine) as s:
        assert s.get(Connection, cid) is None
        assert not any(c.id == cid for c in s.exec(sa.select(Connection)).scalars())
    assert client.get(f"/api/v1/watches/{w['id']}", headers=ann.headers).json()["targets"] == ["outbox"]
    assert client.get(f"/api/v1/connections/{cid}", headers=ann.headers).status_code == 404


def test_a_drive_connection_does_not_expire_with_its_access_token(client, application, ann, fake_oauth):
    """Google's one-hour access-token expiry is not the connection's: the refresh token keeps it alive,
    so it is neither "expiring" at once nor "expired; reconnect" an hour later."""
    from aiposter.services.connections import flag_expiring_tokens

    code, state = fake_oauth.approve(start(client, ann, "google_drive")["authorize_url"])
    [conn] = client.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state}).json()
    assert conn["status"] == "active" and conn["token_expires_at"] is None
    c, creds = stored(application, ann.id)["g-42"]
    assert creds["expiry"] > utcnow().isoformat()  # the access token's expiry stays in the secrets
    for later in (utcnow(), utcnow() + timedelta(hours=2)):
        with session_scope(application.engine) as s:
            assert flag_expiring_tokens(s, now=later) == []
    assert client.get(f"/api/v1/connections/{c.id}", headers=ann.headers).json()["status"] == "active"
