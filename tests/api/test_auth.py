"""Login, tokens, logout, password change, rate limits, disabled accounts."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher

from aiposter.core.models import AuthSession, User, utcnow
from aiposter.db import session_scope
from aiposter.passwords import verify_password

from .conftest import PASSWORD


def login(client, email, password=PASSWORD, **kw):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password}, **kw)


def test_login_returns_a_token_stored_only_as_its_hash(client, application, ann):
    r = login(client, "Ann@Example.com")
    assert r.status_code == 200
    body = r.json()
    assert body["user"]["email"] == "ann@example.com" and "password_hash" not in body["user"]
    token = body["token"]
    with application.engine.connect() as conn:
        rows = [tuple(map(str, row)) for row in conn.execute(sa.select(AuthSession))]
    assert not any(token in cell for row in rows for cell in row)
    assert any(hashlib.sha256(token.encode()).hexdigest() in row for row in rows)
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["id"] == ann.id


def test_session_lifetime_comes_from_the_config(client, application, ann):
    with session_scope(application.engine) as s:
        session = s.exec(sa.select(AuthSession).where(AuthSession.user_id == ann.id)).scalars().first()
    lifetime = session.expires_at - session.created_at
    assert lifetime == timedelta(hours=application.cfg.security.session_lifetime_hours)


def test_wrong_password_and_unknown_email_are_the_same_401(client, ann):
    a = login(client, ann.email, "wrong password!")
    b = login(client, "nobody@example.com")
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json() == {"error": {"code": "unauthorized", "message": "wrong email or password",
                                              "field": None}}


def test_missing_garbage_expired_and_revoked_tokens_are_401(client, application, ann):
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}).status_code == 401
    # expired
    with session_scope(application.engine) as s:
        s.execute(sa.update(AuthSession).where(AuthSession.user_id == ann.id)
                  .values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.get("/api/v1/me", headers=ann.headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    # revoked by logout
    token = login(client, ann.email).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/watches", headers=h).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 200
    assert client.get("/api/v1/watches", headers=h).status_code == 401
    assert client.post("/api/v1/auth/logout", headers=h).status_code == 401


def test_password_change_revokes_the_other_sessions_only(client, ann):
    other = {"Authorization": f"Bearer {login(client, ann.email).json()['token']}"}
    r = client.post("/api/v1/me/password", headers=ann.headers,
                    json={"current_password": PASSWORD, "new_password": "a much longer secret"})
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/me", headers=ann.headers).status_code == 200
    assert client.get("/api/v1/me", headers=other).status_code == 401
    assert login(client, ann.email).status_code == 401
    assert login(client, ann.email, "a much longer secret").status_code == 200


def test_password_change_checks_the_current_one_and_the_new_ones_length(client, ann):
    r = client.post("/api/v1/me/password", headers=ann.headers,
                    json={"current_password": "not it at all", "new_password": "a much longer secret"})
    assert r.status_code == 403
    r = client.post("/api/v1/me/password", headers=ann.headers,
                    json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "new_password"


def test_login_rehashes_when_the_parameters_changed(client, application, ann):
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    with session_scope(application.engine) as s:
        s.execute(sa.update(User).where(User.id == ann.id).values(password_hash=weak))
    assert login(client, ann.email).status_code == 200
    with session_scope(application.engine) as s:
        new = s.get(User, ann.id).password_hash
    assert new != weak and "m=8192" not in new and verify_password(new, PASSWORD)


def test_failed_logins_are_limited_per_account(client, application, ann):
    limit = application.cfg.security.login_max_failures_per_account
    for _ in range(limit):
        assert login(client, ann.email, "wrong password!").status_code == 401
    r = login(client, ann.email)  # even the right password now waits
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0
    assert login(client, "bob@example.com", "whatever pass").status_code == 401  # other accounts are not blocked


def test_failed_logins_are_limited_per_client_address(client, application):
    limit = application.cfg.security.login_max_failures_per_client
    for i in range(limit):
        assert login(client, f"guess{i}@example.com", "wrong password!").status_code == 401
    assert login(client, "another@example.com", "wrong password!").status_code == 429


def test_a_disabled_user_cannot_log_in_and_their_tokens_stop(client, admin, ann):
    assert client.post(f"/api/v1/users/{ann.id}/disable", headers=admin.headers).status_code == 200
    assert client.get("/api/v1/me", headers=ann.headers).status_code == 401
    r = login(client, ann.email)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.post(f"/api/v1/users/{ann.id}/enable", headers=admin.headers).status_code == 200
    assert login(client, ann.email).status_code == 200
    assert client.get("/api/v1/me", headers=ann.headers).status_code == 401  # revoked stays revoked
