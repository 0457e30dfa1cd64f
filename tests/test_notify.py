"""Notifications through the real Apprise library to a loopback webhook receiver (Apprise ``json://``):
delivered, de-duplicated, digested, rate-limited, and never in the pipeline's way."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import drain, write_image
from sqlmodel import select

from aiposter.core import states
from aiposter.core.models import Notification, Post, utcnow
from aiposter.db import session_scope
from aiposter.services import notify, users, watches


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body Apprise posts to it."""

    def __init__(self):
        self.messages: list[dict] = []
        self.got = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.got:
                    outer.messages.append(json.loads(body))
                    outer.got.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class DeadReceiver:
    """Accepts connections and never answers: the worst receiver there is."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        self.url = f"json://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _user(ctx, url: str):
    with session_scope(ctx.engine) as s:
        u = users.create_user(s, f"ann{uuid.uuid4().hex[:4]}@example.com", "correct horse battery")
        notify.add_channel(s, ctx.keyring, u, url, "hook")
        return u.id


def _rows(ctx, user_id):
    with session_scope(ctx.engine) as s:
        return list(s.exec(select(Notification).where(Notification.user_id == user_id).order_by(Notification.id)))


def _failed_post(ctx, tmp_path, user_id, name="broken.jpg"):
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    with session_scope(ctx.engine) as s:
        owner = s.get(users.User, user_id)
        watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(inbox), backfill=True),
                             allow_any_folder=True)
    write_image(inbox, name, data=b"this is not an image at all")
    drain(ctx)
    with session_scope(ctx.engine) as s:
        p = s.exec(select(Post).where(Post.file_name == name)).one()
        assert p.status == states.FAILED
        return p.id


def test_failed_post_is_delivered_once(ctx, tmp_path, receiver):
    uid = _user(ctx, receiver.url)
    pid = _failed_post(ctx, tmp_path, uid)
    assert [r.kind for r in _rows(ctx, uid)] == ["failed"]
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1") == 1
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w2") == 0  # another replica: nothing left
    assert len(receiver.messages) == 1
    assert f"Post {pid} failed" in receiver.messages[0]["title"]
    assert "broken.jpg" in receiver.messages[0]["message"]
    (row,) = _rows(ctx, uid)
    assert row.status == "sent" and row.sent_at is not None


def test_the_same_event_is_queued_once(ctx, receiver):
    uid = _user(ctx, receiver.url)
    for _ in range(3):
        with session_scope(ctx.engine) as s:
            notify.enqueue(s, uid, "reauth", "connection:7:reauth:today", "Reconnect", "please")
    assert len(_rows(ctx, uid)) == 1


def test_reviews_go_out_as_one_digest_and_messages_are_rate_limited(ctx, receiver):
    uid = _user(ctx, receiver.url)
    with session_scope(ctx.engine) as s:
        for i in range(1, 4):
            notify.enqueue(s, uid, "review", f"review:{i}", f"Post {i} waits for your review", "approve it")
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1") == 1
    (msg,) = receiver.messages
    assert "3 post(s) to review" in msg["title"] and "1, 2, 3" in msg["message"]
    with session_scope(ctx.engine) as s:
        notify.enqueue(s, uid, "quota", "quota:x:today", "Quota exhausted", "wait")
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1") == 0  # too soon after the last one
    assert _rows(ctx, uid)[-1].status == "pending"
    later = utcnow() + timedelta(seconds=ctx.cfg.notify.min_interval_seconds + 1)
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1", now=later) == 1
    assert len(receiver.messages) == 2 and receiver.messages[1]["title"] == "Quota exhausted"


def test_a_failed_delivery_is_retried_then_given_up(ctx):
    s_ = socket.socket()
    s_.bind(("127.0.0.1", 0))
    port = s_.getsockname()[1]
    s_.close()  # nothing listens there: connection refused
    uid = _user(ctx, f"json://127.0.0.1:{port}/hook")
    with session_scope(ctx.engine) as s:
        notify.enqueue(s, uid, "failed", "post:1:failed", "Post 1 failed", "boom")
    for _ in range(ctx.cfg.notify.max_attempts):
        assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1") == 0
    (row,) = _rows(ctx, uid)
    assert row.status == "failed" and row.attempts == ctx.cfg.notify.max_attempts and row.last_error


def test_a_dead_receiver_does_not_hold_up_the_pipeline(make_ctx, tmp_path):
    ctx = make_ctx(notify={"timeout_seconds": 30})
    dead = DeadReceiver()
    try:
        uid = _user(ctx, dead.url)
        with session_scope(ctx.engine) as s:
            notify.enqueue(s, uid, "failed", "post:0:failed", "Post 0 failed", "earlier")
        sender = threading.Thread(target=notify.deliver_due, args=(ctx.engine, ctx.keyring, ctx.cfg, "w1"),
                                  daemon=True)
        sender.start()
        assert dead.accepted.wait(30)  # the sender is now stuck on the dead receiver
        pid = _failed_post(ctx, tmp_path, uid)  # the pipeline runs a post to its end meanwhile
        assert sender.is_alive()
        rows = _rows(ctx, uid)
        assert [r.dedup_key.split(":")[1] for r in rows] == ["0", str(pid)]  # queued, not sent inline
        assert rows[1].status == "pending"
    finally:
        dead.close()
    sender.join(60)
    assert not sender.is_alive()
    assert _rows(ctx, uid)[0].last_error  # the failure was recorded, to be retried


def test_channels_are_encrypted_masked_and_test_sends(ctx, receiver):
    uid = _user(ctx, receiver.url.replace("/hook", "/hook-s3cret"))
    with session_scope(ctx.engine) as s:
        u = s.get(users.User, uid)
        (ch,) = notify.list_channels(s, u)
        shown = notify.channel_dict(ch, ctx.keyring)
        assert "s3cret" not in json.dumps(shown) and shown["url"].startswith("json://127.0.0.1")
        assert "s3cret" not in ch.url  # encrypted at rest
        result = notify.send_test(s, ctx.keyring, ctx.cfg, u)
    assert result.ok and receiver.messages[0]["title"] == "aiposter: test notification"
    with session_scope(ctx.engine) as s:
        with pytest.raises(notify.Invalid):
            notify.add_channel(s, ctx.keyring, s.get(users.User, uid), "nosuchscheme://x")


def test_reauth_and_quota_are_queued_once_a_day(ctx, receiver):
    from aiposter.core import credentials, pauses
    from aiposter.core.errors import StepError
    from aiposter.core.models import Connection, Post

    uid = _user(ctx, receiver.url)
    with session_scope(ctx.engine) as s:
        c = Connection(user_id=uid, provider="threads", account_id="t1", account_name="Shop")
        s.add(c)
        s.flush()
        cid = c.id
    for _ in range(2):
        with session_scope(ctx.engine) as s:
            credentials.mark(s, ctx.cfg, cid, credentials.NEEDS_REAUTH, "token revoked")
    with session_scope(ctx.engine) as s:
        w = watches.create_watch(s, ctx.cfg, s.get(users.User, uid),
                                 watches.WatchSpec(folder=str(ctx.cfg.daemon.data_dir)), allow_any_folder=True)
        post = Post(user_id=uid, watch_id=w.id, source_ref="a.jpg", file_name="a.jpg")
        s.add(post)
        s.flush()
        p = pauses.pause(s, ctx.cfg, "captioner:openai", StepError("insufficient_quota", permanent=True,
                                                                   code="quota"))
        for _ in range(2):
            pauses.hold_post(s, post.id, "captioner:openai", p.until, "quota exhausted")
    kinds = [r.kind for r in _rows(ctx, uid)]
    assert kinds == ["reauth", "quota"]
    assert notify.deliver_due(ctx.engine, ctx.keyring, ctx.cfg, "w1") == 1  # one digest of both
    assert "Reconnect your threads account" in receiver.messages[0]["message"]
