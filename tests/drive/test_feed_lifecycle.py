"""A connection's feed and push channel over its watches' lifetime, on SQLite and PostgreSQL against the fake
Drive: the last Drive watch deleted, paused or moved to another account stops the channel (at Google, and its
row at once), housekeeping stops channels left without a watch; two replicas polling one feed after a lease
expired mid-poll record each file once, with no error."""

from __future__ import annotations

import sqlalchemy as sa
from helpers import wait_for
from sqlmodel import select

from aiposter.core.models import DrivePushChannel, Watch
from aiposter.db import session_scope
from aiposter.sources.google_drive import channels

from . import test_wired

drive = test_wired.drive  # the fixture: a fresh fake Drive


def _rows(e) -> list[DrivePushChannel]:
    with session_scope(e.app.engine) as s:
        return list(s.exec(select(DrivePushChannel)))


def _push_env(tmp_path, db_url, drive, monkeypatch) -> test_wired.Env:
    e = test_wired.Env(tmp_path, db_url, drive, monkeypatch)
    e.app.cfg.api.public_url = "https://poster.test"
    e.app.cfg.oauth.google.push_address = "http://127.0.0.1:9/api/v1/drive/push"  # nothing is delivered
    return e


def _open(e) -> str:
    assert channels.maintain(e.ctx)["opened"] == 1
    [row] = _rows(e)
    assert not e.fake.channels[row.channel_id].stopped
    return row.channel_id


def test_deleting_the_last_drive_watch_stops_the_channel(tmp_path, db_url, drive, monkeypatch):
    e = _push_env(tmp_path, db_url, drive, monkeypatch)
    try:
        cid = e.connect()
        first = e.add_watch(drive.add_folder("One"), cid).json()["id"]
        second = e.add_watch(drive.add_folder("Two"), cid).json()["id"]
        channel = _open(e)
        assert e.client.delete(f"/api/v1/watches/{first}", headers=e.headers).status_code == 200
        assert [r.channel_id for r in _rows(e)] == [channel]  # another watch still needs it
        assert not drive.channels[channel].stopped and drive.counts.get("channels.stop", 0) == 0
        assert e.client.delete(f"/api/v1/watches/{second}", headers=e.headers).status_code == 200
        assert drive.channels[channel].stopped and drive.counts["channels.stop"] == 1
        assert _rows(e) == []
        assert channels.maintain(e.ctx) == {"opened": 0, "renewed": 0, "failed": 0, "stopped": 0}
    finally:
        e.close()


def test_pausing_or_moving_the_last_watch_stops_it_and_resuming_reopens(tmp_path, db_url, drive, monkeypatch):
    e = _push_env(tmp_path, db_url, drive, monkeypatch)
    try:
        cid = e.connect()
        folder = drive.add_folder("Photos")
        wid = e.add_watch(folder, cid).json()["id"]
        channel = _open(e)
        r = e.client.post(f"/api/v1/watches/{wid}/pause", headers=e.headers)
        assert r.status_code == 200, r.text
        assert drive.channels[channel].stopped and _rows(e) == []
        assert e.client.post(f"/api/v1/watches/{wid}/resume", headers=e.headers).status_code == 200
        channel = _open(e)  # housekeeping opens one again for the resumed watch
        # Moved to another account: the old one has no Drive watch left.
        other = _second_account(e, cid)
        r = e.client.patch(f"/api/v1/watches/{wid}", headers=e.headers, json={"source_connection_id": other})
        assert r.status_code == 200, r.text
        assert drive.channels[channel].stopped and _rows(e) == []
    finally:
        e.close()


def _second_account(e, cid: int) -> int:
    """Another Drive connection of the user (the fake has one Google user: the same tokens, another row)."""
    from aiposter.core.models import Connection
    from aiposter.crypto import connection_context

    with session_scope(e.app.engine) as s:
        first = s.get(Connection, cid)
        secrets = e.app.keyring.decrypt(first.credentials, context=connection_context(cid))
        c = Connection(user_id=first.user_id, provider="google_drive", account_id="other", account_name="Other",
                       scopes=first.scopes)
        s.add(c)
        s.flush()
        c.credentials = e.app.keyring.encrypt(secrets, context=connection_context(c.id))
        return c.id


def test_housekeeping_stops_channels_of_connections_without_a_watch(tmp_path, db_url, drive, monkeypatch):
    e = _push_env(tmp_path, db_url, drive, monkeypatch)
    try:
        cid = e.connect()
        e.add_watch(drive.add_folder("Photos"), cid)
        channel = _open(e)
        with session_scope(e.app.engine) as s:  # removed by a path that did not stop it (an old version, say)
            s.execute(sa.update(Watch).values(enabled=False))
        assert channels.maintain(e.ctx)["stopped"] == 1
        assert drive.channels[channel].stopped and _rows(e) == []
        assert channels.maintain(e.ctx)["stopped"] == 0  # nothing left to stop
    finally:
        e.close()


def test_two_replicas_after_a_lease_expired_mid_poll_post_once_without_error(tmp_path, db_url, drive, monkeypatch):
    """Replica A claims the feed and asks Drive for its changes; its lease lapses while Drive is slow, and
    replica B claims the feed and polls the same page. A's answer then arrives. Whatever the order of their
    database work, the file is recorded and posted once, neither reports an error, and B's page token stays.

    A statement hook pauses A just before it would insert the file's ``source_file`` row (where, unguarded,
    it raced B on the (watch_id, ref) constraint), so B runs in that window; a guarded A never gets there."""
    import threading
    import uuid
    from datetime import timedelta

    from aiposter.core.drive_feeds import claim_feeds
    from aiposter.core.models import DriveFeed, Post, utcnow
    from aiposter.core.pipeline import Context
    from aiposter.sources.google_drive.poller import poll_feed

    e = test_wired.Env(tmp_path, db_url, drive, monkeypatch)
    try:
        cid = e.connect()
        folder = drive.add_folder("Photos")
        wid = e.add_watch(folder, cid).json()["id"]
        drive.add_file("once.jpg", folder, content=test_wired.jpeg_bytes(color=(3, 77, 5)))
        a, b = e.ctx, Context(e.app.cfg, e.app.engine, owner=f"b-{uuid.uuid4().hex[:6]}", keyring=e.app.keyring)
        with session_scope(e.app.engine) as s:
            s.execute(sa.update(DriveFeed).values(next_poll_at=sa.func.now()))
        with session_scope(e.app.engine) as s:
            [feed_id] = claim_feeds(s, a.owner, 30, 10)
        held = drive.hold_next("changes.list")
        at_insert, go_on = threading.Event(), threading.Event()

        def pause_a_before_its_insert(conn, cursor, statement, *args):
            if threading.current_thread().name == "replica-a" and statement.lstrip().upper().startswith(
                    "INSERT INTO SOURCE_FILE"):
                at_insert.set()
                go_on.wait(10)

        sa.event.listen(e.app.engine, "before_cursor_execute", pause_a_before_its_insert)
        results = {}
        replica_a = threading.Thread(target=lambda: results.setdefault("a", poll_feed(a, feed_id)),
                                     name="replica-a")
        replica_a.start()
        try:
            assert held.arrived.wait(10)  # A's changes.list is at Drive
            with session_scope(e.app.engine) as s:  # A's lease lapses; B takes the feed
                s.execute(sa.update(DriveFeed).values(lease_expires_at=utcnow() - timedelta(minutes=1)))
            with session_scope(e.app.engine) as s:
                assert claim_feeds(s, b.owner, 30, 10) == [feed_id]
            held.release.set()  # A's answer arrives: the same page B is about to read
            assert wait_for(lambda: at_insert.is_set() or not replica_a.is_alive(), 10)
            results["b"] = poll_feed(b, feed_id)
        finally:
            go_on.set()
            held.release.set()
            replica_a.join(10)
            sa.event.remove(e.app.engine, "before_cursor_execute", pause_a_before_its_insert)
        assert not at_insert.is_set()  # A saw it no longer held the feed before writing anything
        assert results["a"].error is None and results["a"].superseded and results["a"].queued == 0
        assert results["b"].error is None and results["b"].queued == 1
        with session_scope(e.app.engine) as s:
            assert [p.file_name for p in s.exec(select(Post))] == ["once.jpg"]
            feed = s.get(DriveFeed, feed_id)
            assert feed.last_error is None and feed.lease_owner is None
            assert s.get(Watch, wid).last_poll_error is None
            b_token = feed.page_token
        [again] = e.poll()  # the next poll starts from B's token: nothing new, nothing twice
        assert (again.queued, again.error) == (0, None)
        with session_scope(e.app.engine) as s:
            assert s.exec(select(sa.func.count()).select_from(Post)).one() == 1
            assert s.get(DriveFeed, feed_id).page_token is not None and b_token is not None
    finally:
        e.close()
