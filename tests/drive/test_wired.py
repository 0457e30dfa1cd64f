"""Drive wired into the daemon (phase 2), on SQLite and PostgreSQL, through the real google-api-python-client
and google-auth against the fake Drive: OAuth connect through the API routes, watches by pasted folder
link, one change feed per connection, posts to the outbox exactly once, faults with visible reasons."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import make_config
from fakes.drive import CLIENT_ID, CLIENT_SECRET, FakeDrive
from fastapi.testclient import TestClient
from helpers import jpeg_bytes, wait_for
from sqlmodel import select

from aiposter.api.app import create_app
from aiposter.app import open_app
from aiposter.core import queue as workqueue
from aiposter.core import states
from aiposter.core.drive_feeds import claim_feeds
from aiposter.core.models import Connection, DriveFeed, Pause, Post, SourceFile, Watch
from aiposter.core.pipeline import Context, process_post
from aiposter.crypto import connection_context
from aiposter.db import session_scope
from aiposter.services import users
from aiposter.sources.google_drive.poller import poll_feed

PASSWORD = "correct horse battery"


@pytest.fixture
def drive():
    f = FakeDrive()
    yield f
    f.close()


def drive_config(tmp_path, db_url, fake: FakeDrive, **extra):
    oauth = {"google": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "auth_uri": fake.auth_uri,
                        "token_uri": fake.token_uri, "drive_api_url": fake.api_url.rstrip("/"),
                        "revoke_uri": fake.revoke_uri},
             "timeout_seconds": 5}
    return make_config(tmp_path, db_url, oauth=oauth, api={"public_url": "http://poster.test"}, **extra)


class Env:
    """An install (API + pipeline context) with one logged-in user."""

    def __init__(self, tmp_path, db_url, fake, monkeypatch, **extra):
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake token endpoint is plain http
        self.fake = fake
        self.app = open_app(drive_config(tmp_path, db_url, fake, **extra), migrate=False)
        self.ctx = Context(self.app.cfg, self.app.engine, owner=f"test-{uuid.uuid4().hex[:6]}",
                           keyring=self.app.keyring)
        self.client = TestClient(create_app(self.app))
        self.client.__enter__()
        with session_scope(self.app.engine) as s:
            self.user_id = users.create_user(s, "ann@example.com", PASSWORD).id
        r = self.client.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": PASSWORD})
        self.headers = {"Authorization": f"Bearer {r.json()['token']}"}
        self.outbox = Path(self.app.cfg.publishers.outbox.directory)

    def close(self):
        self.client.__exit__(None, None, None)
        self.app.close()

    def connect(self) -> int:
        """Through the OAuth routes: start, consent on the fake's page, callback."""
        r = self.client.post("/api/v1/connections/google_drive/start", headers=self.headers)
        assert r.status_code == 200, r.text
        code, state = self.fake.approve(r.json()["authorize_url"])
        r = self.client.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
        assert r.status_code == 200, r.text
        return r.json()[0]["id"]

    def add_watch(self, folder: str, cid: int, **kw):
        return self.client.post("/api/v1/watches", headers=self.headers, json={
            "folder": folder, "source": "google_drive", "source_connection_id": cid, "interval_seconds": 30,
            "targets": ["outbox"], **kw})

    def poll(self) -> list:
        """Poll every due feed once (the daemon's tick + worker, in this thread)."""
        with session_scope(self.app.engine) as s:
            s.execute(sa.update(DriveFeed).values(next_poll_at=sa.func.now()))
        with session_scope(self.app.engine) as s:
            ids = claim_feeds(s, self.ctx.owner, 30, 100)
        return [poll_feed(self.ctx, fid) for fid in ids]

    def process(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            with session_scope(self.app.engine) as s:
                ids = workqueue.claim_posts(s, self.ctx.owner, 30, 100)
            if not ids:
                return
            for pid in ids:
                process_post(self.ctx, pid)

    def posts(self) -> list[Post]:
        with session_scope(self.app.engine) as s:
            return list(s.exec(select(Post).order_by(Post.id)))

    def published(self) -> list[str]:
        return sorted(p.name for p in self.outbox.glob("*.json")) if self.outbox.exists() else []

    def watch(self, wid: int) -> dict:
        return self.client.get(f"/api/v1/watches/{wid}", headers=self.headers).json()


@pytest.fixture
def env(tmp_path, db_url, drive, monkeypatch):
    e = Env(tmp_path, db_url, drive, monkeypatch)
    yield e
    e.close()


def outbox_posts(env) -> list[dict]:
    out = []
    for p in sorted(env.outbox.glob("*.json")):
        out.append(json.loads(p.read_text()))
    return out


# --------------------------------------------------------------------------- end to end


def test_end_to_end_connect_paste_link_created_and_moved_in(env, drive):
    cid = env.connect()
    photos = drive.add_folder("Photos")
    elsewhere = drive.add_folder("Old stuff")
    drive.add_file("already.jpg", photos, content=jpeg_bytes(color=(1, 2, 3)))
    old = drive.add_file("old.jpg", elsewhere, content=jpeg_bytes(color=(9, 9, 9)), age=86400 * 400)

    r = env.add_watch(f"https://drive.google.com/drive/u/0/folders/{photos}?usp=sharing", cid,
                      maximum_age_hours=24)
    assert r.status_code == 201, r.text
    w = r.json()
    assert (w["folder"], w["folder_name"], w["baseline_done"]) == (photos, "Photos", True)

    drive.add_file("new.jpg", photos, content=jpeg_bytes(color=(200, 10, 10)), description="Sunset at the pier")
    [res] = env.poll()
    assert res.queued == 1 and res.error is None
    drive.move(old, photos)  # an old photo moved in: arrival = when seen, so maximum_age does not drop it
    [res] = env.poll()
    assert res.queued == 1
    env.process()
    posts = env.posts()
    assert sorted(p.file_name for p in posts) == ["new.jpg", "old.jpg"]
    assert all(p.status == states.PUBLISHED for p in posts), [(p.status, p.last_error) for p in posts]
    assert [p.description for p in posts if p.file_name == "new.jpg"] == ["Sunset at the pier"]
    assert len(outbox_posts(env)) == 2
    # Nothing more on the next polls: each photo exactly once, and an idle poll is one request.
    drive.reset_counts()
    [res] = env.poll()
    assert (res.queued, res.requests) == (0, 1)
    assert sum(drive.counts.values()) == 1
    env.process()
    assert len(env.posts()) == 2 and len(outbox_posts(env)) == 2


# --------------------------------------------------------------------------- watches


def test_watch_creation_says_what_is_wrong(env, drive):
    cid = env.connect()
    doc = drive.add_file("photo.jpg", "root", content=jpeg_bytes())
    r = env.add_watch("https://docs.google.com/document/d/1abcdefghijkl/edit", cid)
    assert r.status_code == 422 and "single file or document" in r.json()["error"]["message"]
    r = env.add_watch(doc, cid)
    assert r.status_code == 422 and "not a folder" in r.json()["error"]["message"]
    r = env.add_watch("1NoSuchFolderAnywhere", cid)
    assert r.status_code == 422 and "has no folder" in r.json()["error"]["message"]
    trashed = drive.add_folder("Bin me")
    drive.trash(trashed)
    r = env.add_watch(trashed, cid)
    assert r.status_code == 422 and "trash" in r.json()["error"]["message"]
    with session_scope(env.app.engine) as s:
        assert s.exec(select(Watch)).first() is None  # nothing created by a failed check


def test_baseline_routing_subfolders_and_one_request_per_idle_poll(env, drive):
    cid = env.connect()
    folders = [drive.add_folder(f"F{i}") for i in range(5)]
    for f in folders:
        drive.add_file("base.jpg", f, content=jpeg_bytes(color=(7, 7, 7)))
    wids = [env.add_watch(f, cid).json()["id"] for f in folders]
    nested_root = drive.add_folder("Nested")
    sub = drive.add_folder("Sub", nested_root)
    w_sub = env.add_watch(nested_root, cid, include_subfolders=True).json()
    assert w_sub["include_subfolders"] is True
    with session_scope(env.app.engine) as s:
        assert s.exec(select(sa.func.count()).select_from(DriveFeed)).one() == 1  # one feed per connection
        assert s.exec(select(sa.func.count()).select_from(SourceFile)
                      .where(SourceFile.status == states.SF_BASELINE)).one() == 5

    env.poll()  # catches up with the folders made since the feed's token (nothing to post)
    drive.reset_counts()
    [res] = env.poll()
    assert res.requests == 1 and sum(drive.counts.values()) == 1  # idle: one request for six folders

    drive.add_file("a.jpg", folders[2], content=jpeg_bytes(color=(1, 100, 1)))
    drive.add_file("deep.jpg", sub, content=jpeg_bytes(color=(1, 1, 100)))
    drive.add_native("notes", folders[3])  # a Google Doc: ignored, never an error
    [res] = env.poll()
    assert res.queued == 2 and not res.problems
    by_watch = {p.watch_id: p.file_name for p in env.posts()}
    assert by_watch == {wids[2]: "a.jpg", w_sub["id"]: "deep.jpg"}


def test_rename_reupload_duplicate_content_change_and_trash_before_processing(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    wid = env.add_watch(folder, cid).json()["id"]
    a = drive.add_file("a.jpg", folder, content=jpeg_bytes(color=(10, 20, 30)))
    env.poll()
    drive.rename(a, "renamed.jpg")
    drive.set_description(a, "edited")
    drive.reupload_same(a)
    drive.copy(a, folder)  # the same bytes as another file: a duplicate
    [res] = env.poll()
    assert (res.queued, res.skipped) == (0, 1)
    drive.set_content(a, jpeg_bytes(color=(99, 99, 99)))  # new bytes: not posted again by default
    [res] = env.poll()
    assert res.queued == 0
    b = drive.add_file("b.jpg", folder, content=jpeg_bytes(color=(50, 60, 70)))
    env.poll()
    drive.trash(b)  # trashed before it was downloaded
    env.poll()
    env.process()
    posts = {p.file_name: p for p in env.posts()}
    assert set(posts) == {"a.jpg", "b.jpg"}
    assert posts["a.jpg"].status == states.PUBLISHED
    assert posts["b.jpg"].status == states.SKIPPED and "trash" in posts["b.jpg"].last_error
    with session_scope(env.app.engine) as s:
        sf = s.exec(select(SourceFile).where(SourceFile.watch_id == wid, SourceFile.ref == a)).one()
        assert "content changed" in sf.reason


def test_folder_deleted_puts_only_that_watch_in_error(env, drive):
    cid = env.connect()
    f1, f2 = drive.add_folder("One"), drive.add_folder("Two")
    w1, w2 = env.add_watch(f1, cid).json()["id"], env.add_watch(f2, cid).json()["id"]
    drive.delete(f1)
    drive.add_file("x.jpg", f2, content=jpeg_bytes(color=(3, 4, 5)))
    [res] = env.poll()
    assert res.queued == 1 and w1 in res.problems
    assert env.watch(w1)["status"] == "error" and "deleted" in env.watch(w1)["last_poll_error"]
    assert env.watch(w2)["status"] == "active"


# --------------------------------------------------------------------------- faults


def test_rate_limit_pauses_the_connection_and_polls_resume(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    wid = env.add_watch(folder, cid).json()["id"]
    drive.fail_next("changes.list", 403, "userRateLimitExceeded", retry_after="2")
    [res] = env.poll()
    assert res.error
    with session_scope(env.app.engine) as s:
        p = s.exec(select(Pause).where(Pause.scope == f"connection:{cid}")).one()
        assert p.code == "rate_limited"
        token_before = s.exec(select(DriveFeed)).one().page_token
    w = env.watch(wid)
    assert w["status"] == "waiting" and "rate" in w["last_poll_error"].lower()
    with session_scope(env.app.engine) as s:  # the pause ran out (Retry-After honoured meanwhile)
        s.execute(sa.update(Pause).values(until=sa.func.now()))
    drive.add_file("n.jpg", folder, content=jpeg_bytes(color=(5, 5, 5)))
    [res] = env.poll()
    assert res.queued == 1 and res.error is None
    with session_scope(env.app.engine) as s:
        assert s.exec(select(DriveFeed)).one().page_token != token_before
    assert env.watch(wid)["status"] == "active"


def test_refresh_refused_marks_needs_reauth_and_watches_wait(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    wid = env.add_watch(folder, cid).json()["id"]
    drive.revoke_refresh_tokens()
    [res] = env.poll()
    assert res.error
    with session_scope(env.app.engine) as s:
        assert s.get(Connection, cid).status == "needs_reauth"
    w = env.watch(wid)
    assert w["status"] == "waiting" and "reconnect" in w["last_poll_error"]
    [res] = env.poll()  # waits, no crash, no request
    assert res.error and "reconnect" in res.error


def test_expired_access_token_is_refreshed_and_saved_without_client_secret(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    env.add_watch(folder, cid)
    drive.expire_access_tokens()
    drive.add_file("n.jpg", folder, content=jpeg_bytes(color=(5, 50, 5)))
    [res] = env.poll()
    assert res.queued == 1
    with session_scope(env.app.engine) as s:
        c = s.get(Connection, cid)
        secrets = json.loads(env.app.keyring.decrypt(c.credentials, context=connection_context(cid)))
    assert secrets["token"] in drive.access and "client_secret" not in secrets


def test_rejected_page_token_resyncs_without_reposting(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    env.add_watch(folder, cid)
    drive.add_file("one.jpg", folder, content=jpeg_bytes(color=(11, 12, 13)))
    env.poll()
    drive.expire_page_tokens()
    drive.add_file("two.jpg", folder, content=jpeg_bytes(color=(21, 22, 23)))
    [res] = env.poll()
    assert res.resynced and res.queued == 1
    assert sorted(p.file_name for p in env.posts()) == ["one.jpg", "two.jpg"]


def test_download_size_cap_and_disconnect_revokes(tmp_path, db_url, drive, monkeypatch):
    e = Env(tmp_path, db_url, drive, monkeypatch, images={"max_file_bytes": 2000})
    try:
        cid = e.connect()
        folder = drive.add_folder("Photos")
        e.add_watch(folder, cid)
        drive.add_file("big.jpg", folder, content=jpeg_bytes(size=(400, 400), color=(1, 2, 3)) + b"\0" * 5000)
        e.poll()
        e.process()
        [p] = e.posts()
        assert p.status == states.FAILED and "limit" in p.last_error
        r = e.client.delete(f"/api/v1/connections/{cid}", headers=e.headers)
        assert r.status_code == 200, r.text
        assert drive.revoked  # revoked at Google
        with session_scope(e.app.engine) as s:
            assert s.get(Connection, cid) is None
    finally:
        e.close()


def test_folder_picker_lists_my_drive_and_shared_drives(env, drive):
    cid = env.connect()
    drive.add_folder("Holidays")
    team = drive.add_shared_drive("Team")
    r = env.client.get(f"/api/v1/connections/{cid}/folders", headers=env.headers)
    assert r.status_code == 200, r.text
    names = {(f["name"], f["kind"]) for f in r.json()["folders"]}
    assert ("Holidays", "folder") in names and ("Team", "shared_drive") in names
    r = env.client.get(f"/api/v1/connections/{cid}/folders", params={"q": "Holi"}, headers=env.headers)
    assert [f["name"] for f in r.json()["folders"]] == ["Holidays"]
    assert team


# --------------------------------------------------------------------------- push


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_end_to_end_within_five_seconds(tmp_path, db_url, drive, monkeypatch):
    """Push on (public_url HTTPS; Google's deliveries go to a served API): a change is posted within 5 s,
    far below the 30 s polling interval, and a forged notification is refused."""
    import threading
    import time

    import uvicorn

    from aiposter.core.daemon import Daemon
    from aiposter.core.models import DrivePushChannel

    port = _free_port()
    e = Env(tmp_path, db_url, drive, monkeypatch, daemon={"tick_seconds": 0.2, "housekeeping_seconds": 3600})
    e.app.cfg.api.public_url = "https://poster.test"
    e.app.cfg.oauth.google.push_address = f"http://127.0.0.1:{port}/api/v1/drive/push"
    server = uvicorn.Server(uvicorn.Config(create_app(e.app), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    daemon = None
    try:
        cid = e.connect()
        folder = drive.add_folder("Photos")
        r = e.add_watch(folder, cid)
        assert r.status_code == 201, r.text
        thread.start()
        assert wait_for(lambda: server.started, 10)
        daemon = Daemon(e.ctx)
        daemon.start()  # housekeeping opens the channel; the first tick polls the new feed

        def channel_open():
            with session_scope(e.app.engine) as s:
                return s.exec(select(DrivePushChannel)).first() is not None

        assert wait_for(channel_open, 10)
        with session_scope(e.app.engine) as s:
            feed = s.exec(select(DriveFeed)).one()
        assert wait_for(lambda: _feed_polled(e), 10) and feed is not None

        changed = time.monotonic()
        drive.add_file("pushed.jpg", folder, content=jpeg_bytes(color=(120, 30, 200)))
        assert wait_for(lambda: len(e.published()) >= 1, 5.0), "not posted within 5 s of the change"
        latency = time.monotonic() - changed
        assert latency < 5.0
        assert [p.file_name for p in e.posts()] == ["pushed.jpg"]
        assert drive.deliveries  # it came by push (the poll interval is 30 s)

        forged = e.client.post("/api/v1/drive/push", headers={
            "X-Goog-Channel-ID": "nope", "X-Goog-Channel-Token": "x", "X-Goog-Resource-ID": "r",
            "X-Goog-Resource-State": "change"})
        assert forged.status_code == 403
    finally:
        if daemon is not None:
            daemon.stop(5)
        server.should_exit = True
        thread.join(5)
        e.close()


def _feed_polled(e) -> bool:
    with session_scope(e.app.engine) as s:
        return s.exec(select(DriveFeed)).one().last_poll_at is not None


def test_push_channel_renewed_before_expiry_and_stopped_on_disconnect(tmp_path, db_url, drive, monkeypatch):
    from aiposter.core.models import DrivePushChannel
    from aiposter.sources.google_drive import channels

    e = Env(tmp_path, db_url, drive, monkeypatch)
    e.app.cfg.api.public_url = "https://poster.test"
    e.app.cfg.oauth.google.push_address = "http://127.0.0.1:9/api/v1/drive/push"
    try:
        cid = e.connect()
        e.add_watch(drive.add_folder("Photos"), cid)
        assert channels.maintain(e.ctx)["opened"] == 1
        assert channels.maintain(e.ctx) == {"opened": 0, "renewed": 0, "failed": 0, "stopped": 0}  # not due yet
        with session_scope(e.app.engine) as s:
            first = s.exec(select(DrivePushChannel)).one()
            assert "token" not in first.token and first.connection_id == cid  # ciphertext
            first_id = first.channel_id
            s.execute(sa.update(DrivePushChannel).values(expires_at=sa.func.now()))
        assert channels.maintain(e.ctx)["renewed"] == 1
        with session_scope(e.app.engine) as s:
            [row] = s.exec(select(DrivePushChannel)).all()
            assert row.channel_id != first_id
        assert drive.channels[first_id].stopped  # the old one was stopped at Google
        r = e.client.delete(f"/api/v1/connections/{cid}", headers=e.headers)
        assert r.status_code == 200, r.text
        assert drive.channels[row.channel_id].stopped and drive.revoked
        with session_scope(e.app.engine) as s:
            assert s.exec(select(DrivePushChannel)).first() is None
    finally:
        e.close()


def test_baseline_deferred_when_drive_is_down_at_creation(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    drive.add_file("before.jpg", folder, content=jpeg_bytes(color=(8, 8, 8)))
    drive.fail_next("files.list", 503)
    r = env.add_watch(folder, cid)
    assert r.status_code == 201, r.text
    assert r.json()["baseline_done"] is False and r.json()["folder_name"] == "Photos"
    [res] = env.poll()  # the first poll takes the baseline: what was there is not posted
    assert res.queued == 0 and res.error is None
    wid = r.json()["id"]
    assert env.watch(wid)["baseline_done"] is True
    drive.add_file("after.jpg", folder, content=jpeg_bytes(color=(80, 8, 8)))
    [res] = env.poll()
    assert res.queued == 1


def test_download_rate_limit_pauses_the_connection_for_its_posts(env, drive):
    cid = env.connect()
    folder = drive.add_folder("Photos")
    env.add_watch(folder, cid)
    drive.add_file("a.jpg", folder, content=jpeg_bytes(color=(30, 40, 50)))
    env.poll()
    drive.fail_next("files.get_media", 429, retry_after="1")
    env.process(rounds=1)
    [p] = env.posts()
    assert p.status == states.DETECTED and p.paused_by == f"connection:{cid}"
    assert "paused" in p.last_error and p.step_attempts == 0  # waits, no attempt spent
    with session_scope(env.app.engine) as s:
        s.execute(sa.update(Pause).values(until=sa.func.now()))
        s.execute(sa.update(Post).values(next_attempt_at=sa.func.now()))
    env.process()
    [p] = env.posts()
    assert p.status == states.PUBLISHED, p.last_error
    with session_scope(env.app.engine) as s:  # the probe's success lifted the pause
        assert s.exec(select(Pause)).first() is None


def test_shared_drive_folder_and_shortcut_to_an_image(env, drive):
    cid = env.connect()
    team = drive.add_shared_drive("Team")
    folder = drive.add_folder("Team photos", team)
    w = env.add_watch(folder, cid).json()
    assert w["folder_name"] == "Team photos"
    elsewhere = drive.add_folder("Elsewhere")
    target = drive.add_file("target.jpg", elsewhere, content=jpeg_bytes(color=(140, 70, 35)))
    drive.add_file("team.jpg", folder, content=jpeg_bytes(color=(35, 70, 140)))
    [res] = env.poll()
    assert res.queued == 1
    mine = drive.add_folder("Mine")
    w2 = env.add_watch(mine, cid).json()
    drive.add_shortcut(target, mine, name="link to target")
    [res] = env.poll()
    assert res.queued == 1
    env.process()
    posts = {p.watch_id: p for p in env.posts()}
    assert posts[w["id"]].status == states.PUBLISHED and posts[w2["id"]].status == states.PUBLISHED
    assert posts[w2["id"]].file_name == "link to target"


def test_api_callback_finishes_a_flow_started_from_the_terminal(env, drive):
    from aiposter.services import connections

    with session_scope(env.app.engine) as s:
        owner = users.get_user_by_email(s, "ann@example.com")
        started = connections.start(s, env.app.cfg, env.app.keyring, owner, "google_drive",
                                    "http://poster.test/api/v1/connections/google_drive/callback")
    code, state = drive.approve(started["authorize_url"])
    fresh = TestClient(create_app(env.app))  # another browser: no cookie from any start
    r = fresh.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
    assert r.status_code == 200, r.text
    assert r.json()[0]["provider"] == "google_drive"
    again = fresh.get("/api/v1/connections/google_drive/callback", params={"code": code, "state": state})
    assert again.status_code == 400  # single use
