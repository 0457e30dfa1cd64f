"""Issue 8, finding 7: the OAuth callback links accounts only in the browser that started the connection.

Someone who opens another user's authorization link and consents with their own Page must not attach it to
that user's account; the user themself can still finish, and sees which accounts were linked."""

from __future__ import annotations

import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from aiposter.core.models import Connection
from aiposter.db import session_scope


def _connections(application, user_id):
    with session_scope(application.engine) as s:
        return list(s.exec(sa.select(Connection).where(Connection.user_id == user_id)).scalars())


def test_someone_elses_browser_cannot_finish_a_users_connection(client, application, ann, fake_oauth):
    r = client.post("/api/v1/connections/facebook/start", headers=ann.headers)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/api/v1/connections/facebook/callback" in cookie
    authorize_url = r.json()["authorize_url"]
    code, state = fake_oauth.approve(authorize_url)  # the attacker opened the link and consents with their Page
    with TestClient(client.app) as attackers_browser:
        r = attackers_browser.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and r.json()["error"]["code"] == "oauth_failed"
    assert "did not start" in r.json()["error"]["message"]
    assert _connections(application, ann.id) == []
    # The state was not spent: ann, in her own browser, still finishes and sees what was granted, to pick from.
    code, _ = fake_oauth.approve(authorize_url)  # her own consent
    r = client.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state})
    assert r.status_code == 200, r.text
    assert [c["account_name"] for c in r.json()["pending"]["candidates"]] == ["Bakery", "Garage"]
    assert "max-age=0" in r.headers["set-cookie"].lower() or 'expires=' in r.headers["set-cookie"].lower()
    r = client.post(f"/api/v1/connections/grants/{r.json()['pending']['id']}/select", headers=ann.headers,
                    json={"account_ids": ["p1", "p2"]})
    assert r.status_code == 200, r.text
    assert len(_connections(application, ann.id)) == 2


def test_a_flow_started_outside_the_browser_is_finished_with_the_token(client, application, ann, fake_oauth):
    with TestClient(client.app) as cli_tool:  # e.g. curl: the cookie never reaches the user's browser
        started = cli_tool.post("/api/v1/connections/threads/start", headers=ann.headers).json()
    code, state = fake_oauth.approve(started["authorize_url"])
    with TestClient(client.app) as users_browser:
        r = users_browser.get("/api/v1/connections/threads/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and "/finish" in r.json()["error"]["message"]
    r = client.post("/api/v1/connections/threads/finish", headers=ann.headers, json={"state": state, "code": code})
    assert r.status_code == 200, r.text
    assert json.loads(r.text)[0]["account_name"] == "ann.threads"


def test_a_denied_consent_in_another_browser_does_not_spend_the_state(client, application, ann, fake_oauth):
    started = client.post("/api/v1/connections/threads/start", headers=ann.headers).json()
    with TestClient(client.app) as other:
        r = other.get("/api/v1/connections/threads/callback",
                      params={"state": started["state"], "error": "access_denied"})
    assert r.status_code == 400 and "did not start" in r.json()["error"]["message"]
    code, state = fake_oauth.approve(started["authorize_url"])
    assert client.get("/api/v1/connections/threads/callback",
                      params={"code": code, "state": state}).status_code == 200
