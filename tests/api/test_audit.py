"""Issue 8, finding 11: the audit log records logins, user administration, connections, exports and
deletions (who, what, when, from where), admins read it (API and CLI), housekeeping purges it after the
retention time, and a deleted user's rows go with them where they name only them."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from aiposter.core.daemon import Daemon
from aiposter.core.models import AuditEvent, utcnow
from aiposter.core.pipeline import Context
from aiposter.db import session_scope

from .conftest import PASSWORD


def _events(client, admin, **params):
    r = client.get("/api/v1/audit", headers=admin.headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _rows(application):
    with session_scope(application.engine) as s:
        return list(s.exec(sa.select(AuditEvent).order_by(AuditEvent.id)).scalars())


def test_the_audit_log_records_who_did_what_from_where(client, application, admin, ann, fake_oauth):
    with TestClient(client.app, client=("198.51.100.9", 5000)) as away:
        assert away.post("/api/v1/auth/login", json={"email": ann.email, "password": "wrong password!"}
                         ).status_code == 401
    created = client.post("/api/v1/users", headers=admin.headers,
                          json={"email": "zoe@example.com", "password": "a much longer secret"}).json()
    client.post(f"/api/v1/users/{created['id']}/disable", headers=admin.headers)
    client.post(f"/api/v1/users/{created['id']}/enable", headers=admin.headers)
    started = client.post("/api/v1/connections/threads/start", headers=ann.headers).json()
    code, state = fake_oauth.approve(started["authorize_url"])
    [conn] = client.get("/api/v1/connections/threads/callback", params={"code": code, "state": state}).json()
    client.delete(f"/api/v1/connections/{conn['id']}", headers=ann.headers)
    client.get("/api/v1/me/export", headers=ann.headers)

    events = _events(client, admin)
    by_action = {}
    for e in events:
        by_action.setdefault(e["action"], []).append(e)
    assert {"login.succeeded", "login.failed", "user.created", "user.disabled", "user.enabled", "connection.added",
            "connection.removed", "data.exported"} <= set(by_action)
    failed = by_action["login.failed"][0]
    assert (failed["subject_email"], failed["client"], failed["actor_id"]) == (ann.email, "198.51.100.9", None)
    assert failed["detail"] == "wrong password"
    disabled = by_action["user.disabled"][0]
    assert (disabled["actor_email"], disabled["subject_email"], disabled["client"]) == (
        admin.email, "zoe@example.com", "testclient")
    added = by_action["connection.added"][0]
    assert added["actor_email"] == ann.email and "ann.threads" in added["detail"] and "threads" in added["detail"]
    assert "ann.threads" in by_action["connection.removed"][0]["detail"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)  # newest first
    # Filters and paging.
    assert {e["action"] for e in _events(client, admin, action="login.failed")} == {"login.failed"}
    assert all(ann.id in (e["actor_id"], e["subject_id"]) for e in _events(client, admin, user_id=ann.id))
    page = client.get("/api/v1/audit", headers=admin.headers, params={"limit": 2}).json()
    older = _events(client, admin, limit=2, cursor=page["next_cursor"])
    assert older[0]["id"] < page["items"][-1]["id"]
    # Users cannot read it.
    assert client.get("/api/v1/audit", headers=ann.headers).status_code == 403


def test_a_lockout_is_recorded_once(client, application, admin, ann):
    limit = application.cfg.security.login_max_failures_per_account
    for _ in range(limit + 3):
        client.post("/api/v1/auth/login", json={"email": ann.email, "password": "wrong password!"})
    locked = _events(client, admin, action="login.locked")
    assert len(locked) == 1 and locked[0]["subject_email"] == ann.email
    assert len(_events(client, admin, action="login.failed")) == limit


def test_deleting_a_user_removes_the_rows_naming_only_them(client, application, admin, ann, bob):
    client.post(f"/api/v1/users/{ann.id}/disable", headers=admin.headers)  # names the admin too: stays
    client.post(f"/api/v1/users/{ann.id}/enable", headers=admin.headers)
    ann_token = client.post("/api/v1/auth/login", json={"email": ann.email, "password": PASSWORD}).json()["token"]
    client.get("/api/v1/me/export", headers={"Authorization": f"Bearer {ann_token}"})
    bob_rows_before = [e.id for e in _rows(application) if bob.id in (e.actor_id, e.subject_id)]
    r = client.request("DELETE", "/api/v1/me", headers={"Authorization": f"Bearer {ann_token}"},
                       json={"password": PASSWORD})
    assert r.status_code == 200
    rows = _rows(application)
    assert ann.email not in json.dumps([AuditEvent.model_dump(e, mode="json") for e in rows])
    about_ann = [e for e in rows if ann.id in (e.actor_id, e.subject_id)]
    assert {e.action for e in about_ann} == {"user.disabled", "user.enabled", "account.deleted"}
    assert all(e.actor_email == admin.email for e in about_ann if e.action != "account.deleted")
    assert [e.id for e in rows if bob.id in (e.actor_id, e.subject_id)] == bob_rows_before  # others untouched


def test_housekeeping_purges_rows_past_the_retention(client, application, admin, ann):
    with session_scope(application.engine) as s:
        s.add(AuditEvent(action="login.succeeded", at=utcnow() - timedelta(days=400), client="old"))
        s.add(AuditEvent(action="login.succeeded", at=utcnow() - timedelta(days=2), client="recent"))
    application.cfg.security.audit_retention_days = 30
    Daemon(Context(application.cfg, application.engine, owner="audit-test", keyring=application.keyring)
           ).housekeeping()
    clients = {e.client for e in _rows(application)}
    assert "recent" in clients and "old" not in clients


def test_the_cli_lists_the_audit_log(tmp_path, db_url):
    from typer.testing import CliRunner

    from aiposter.cli import app

    config = tmp_path / "c.toml"
    config.write_text(f'[db]\nurl = "{db_url}"\n[daemon]\ndata_dir = "{tmp_path / "data"}"\n'
                      "[quickstart]\nenabled = false\n")
    runner = CliRunner()
    base = ["--config", str(config)]
    assert runner.invoke(app, [*base, "user", "create", "zoe@example.com", "--no-password"]).exit_code == 0
    assert runner.invoke(app, [*base, "user", "delete", "zoe@example.com", "--yes"]).exit_code == 0
    r = runner.invoke(app, [*base, "audit", "list", "--json"])
    assert r.exit_code == 0, r.output
    events = json.loads(r.stdout)
    assert [e["action"] for e in events] == ["user.deleted"]  # the creation named only zoe: gone with her
    assert events[0]["client"] == "cli" and events[0]["actor"] == "operator" and "zoe" not in r.stdout
    r = runner.invoke(app, [*base, "audit", "list"])
    assert r.exit_code == 0 and "user.deleted" in r.stdout
