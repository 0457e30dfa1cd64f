"""Privacy rights: export everything (no secrets), restrict processing, erase the account completely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from aiposter.core import queue as workqueue
from aiposter.core.models import AuthSession, Connection, OAuthState, User, Watch, utcnow
from aiposter.db import session_scope

from .conftest import PASSWORD
from .seed import seed


def test_export_has_all_my_data_and_no_secrets(client, application, ann, bob, photos, bobs_photos, fake_oauth):
    mine = seed(application, ann.email, photos, "annmarker")
    seed(application, bob.email, bobs_photos, "bobmarker")
    client.post("/api/v1/connections/google_drive/start", headers=ann.headers)  # a pending OAuth state
    r = client.get("/api/v1/me/export", headers=ann.headers)
    assert r.status_code == 200
    doc = r.json()
    assert doc["format"] == "aiposter.export/1" and doc["profile"]["email"] == ann.email
    assert [c["id"] for c in doc["connections"]] == [mine["connection"]]
    [w] = doc["watches"]
    assert w["id"] == mine["watch"] and len(w["targets"]) == 2 and w["files"][0]["ref"] == "annmarker.jpg"
    [p] = doc["posts"]
    assert p["id"] == mine["post"] and len(p["targets"]) == 2 and p["events"][0]["message"] == "failed annmarker"
    text = json.dumps(doc)
    assert "bobmarker" not in text
    [ch] = doc["notifications"]["channels"]  # notification settings, with the secret masked
    assert ch["label"] == "my hook" and ch["url"].startswith("json://") and "annmarker-secret" not in text
    assert [n["body"] for n in doc["notifications"]["recent"]] == ["boom annmarker"]
    assert p["events"][0]["actor"] == f"user:{ann.id} {ann.email}"  # review history: who did it
    with session_scope(application.engine) as s:
        secrets = [s.get(User, ann.id).password_hash, s.get(Connection, mine["connection"]).credentials]
        secrets += [x.token_hash for x in s.exec(sa.select(AuthSession)).scalars()]
        secrets += [x.state_hash for x in s.exec(sa.select(OAuthState)).scalars()]
    assert len(secrets) >= 4 and not any(x in text for x in secrets)
    for word in ("password_hash", "token_hash", "credentials", "secret-annmarker", "code_verifier"):
        assert word not in text


def test_restriction_pauses_all_processing_until_resumed(client, application, ann, photos):
    seed(application, ann.email, photos, "annmarker")
    with session_scope(application.engine) as s:
        s.execute(sa.update(Watch).values(next_poll_at=utcnow()))

    def claimable():
        with session_scope(application.engine) as s:
            ids = workqueue.claim_watches(s, "test", 30, 10)
            s.rollback()
        return ids

    assert client.post("/api/v1/me/pause", headers=ann.headers).json()["processing_paused"] is True
    assert claimable() == []
    assert client.post("/api/v1/me/resume", headers=ann.headers).json()["processing_paused"] is False
    assert len(claimable()) == 1


def _freeze(row) -> tuple:
    return tuple(json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v for v in row)


def _snapshot(engine) -> dict[str, set[tuple]]:
    with engine.connect() as conn:
        return {t.name: {_freeze(row) for row in conn.execute(sa.select(t))}
                for t in SQLModel.metadata.sorted_tables}


def _owned(snapshot: dict[str, set[tuple]], engine, user_id: int) -> dict[str, set[tuple]]:
    """The rows that belong to the user, following every foreign key chain down from user_account."""
    tables = {t.name: t for t in SQLModel.metadata.sorted_tables}
    owned: dict[str, set] = {name: set() for name in tables}
    ids: dict[str, set] = {"user_account": {user_id}}
    for name, table in tables.items():  # sorted: parents before children
        cols = [c.name for c in table.columns]
        for row in snapshot[name]:
            rec = dict(zip(cols, row, strict=True))
            mine = rec["id"] in ids.get(name, set()) if name == "user_account" else any(
                fk.parent.name in rec and rec[fk.parent.name] in ids.get(fk.column.table.name, set())
                and fk.ondelete == "CASCADE" for fk in table.foreign_keys)
            if mine:
                owned[name].add(row)
                ids.setdefault(name, set()).add(rec["id"])
    return owned


@pytest.mark.parametrize("who", ["self", "admin"])
def test_deleting_a_user_leaves_nothing_of_theirs(client, application, ann, bob, admin, photos, bobs_photos,
                                                  fake_oauth, who):
    engine, media = application.engine, application.cfg.media_dir
    anns = seed(application, ann.email, photos, "annmarker")
    bobs = seed(application, bob.email, bobs_photos, "bobmarker")
    client.post("/api/v1/connections/threads/start", headers=ann.headers)
    client.post("/api/v1/connections/threads/start", headers=bob.headers)
    outbox = Path(application.cfg.publishers.outbox.directory)
    outbox.mkdir(parents=True, exist_ok=True)
    for pid in (anns["post"], bobs["post"]):
        (media / f"{pid}.jpg").write_bytes(b"jpeg")
        (media / f"{pid}.download").write_bytes(b"raw")
        for ext in ("json", "jpg"):  # the dry-run destination's copies, on this machine
            (outbox / f"post-{pid}-1.{ext}").write_bytes(b"copy")
    before = _snapshot(engine)
    owned = _owned(before, engine, ann.id)
    kinds = {"user_account", "auth_session", "connection", "oauth_state", "watch", "watch_target", "source_file",
             "post", "post_target", "post_event", "notify_channel", "notification"}
    assert {name for name, rows in owned.items() if rows} == kinds  # every kind of data is there to delete

    if who == "self":
        wrong = client.request("DELETE", "/api/v1/me", headers=ann.headers, json={"password": "not my password"})
        assert wrong.status_code == 403
        r = client.request("DELETE", "/api/v1/me", headers=ann.headers, json={"password": PASSWORD})
    else:
        r = client.delete(f"/api/v1/users/{ann.id}", headers=admin.headers)
    assert r.status_code == 200 and r.json() == {"deleted": True, "posts": 1}

    after = _snapshot(engine)
    for name in before:
        if name in ("audit_event", "rate_limit"):
            continue  # their own rules (rows naming only the user go, a deletion is recorded): test_audit.py
        assert after[name] == before[name] - owned[name], name  # theirs gone, everyone else's untouched
    dump = json.dumps({k: [list(map(str, r)) for r in v] for k, v in after.items()})
    assert ann.email not in dump and "annmarker" not in dump and "bobmarker" in dump
    assert sorted(p.name for p in media.iterdir()) == sorted([f"{bobs['post']}.jpg", f"{bobs['post']}.download"])
    assert sorted(p.name for p in outbox.iterdir()) == [f"post-{bobs['post']}-1.jpg", f"post-{bobs['post']}-1.json"]
    assert client.get("/api/v1/me", headers=ann.headers).status_code == 401
    assert client.get("/api/v1/watches", headers=bob.headers).json()[0]["id"] == bobs["watch"]
