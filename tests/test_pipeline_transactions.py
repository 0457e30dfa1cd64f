"""Transactions per photo (issue 13): steps with no external side effect between them share one commit,
and every side effect still comes after a committed state (the SIGKILL tests check the recovery)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from helpers import jpeg_bytes, write_image
from sqlmodel import select

from aiposter.core import pipeline, states
from aiposter.core import queue as workqueue
from aiposter.core.models import Post, Watch, utcnow
from aiposter.db import session_scope
from aiposter.services import users, watches


def add_watch(ctx, inbox):
    with session_scope(ctx.engine) as s:
        owner = users.create_user(s, "ann@example.com", "correct horse battery")
        return watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(inbox), backfill=True),
                                    allow_any_folder=True).id


def poll_and_claim(ctx, wid) -> list[int]:
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).where(Watch.id == wid).values(next_poll_at=utcnow()))
    pipeline.poll_watch(ctx, wid)
    with session_scope(ctx.engine) as s:
        return workqueue.claim_posts(s, ctx.owner, 30, 100)


class Commits:
    """Each commit of the engine with the statements it committed and how many outbox records existed
    when it committed."""

    def __init__(self, engine, outbox: str):
        self.engine, self.outbox, self.pending, self.log = engine, outbox, [], []
        sa.event.listen(engine, "before_cursor_execute", self._stmt)
        sa.event.listen(engine, "commit", self._commit)

    def _stmt(self, conn, cursor, statement, params, context, executemany):
        self.pending.append(" ".join(statement.split()))

    def _commit(self, conn):
        published = len([f for f in os.listdir(self.outbox) if f.endswith(".json")]) if os.path.isdir(
            self.outbox) else 0
        self.log.append((self.pending, published))
        self.pending = []

    def close(self):
        sa.event.remove(self.engine, "before_cursor_execute", self._stmt)
        sa.event.remove(self.engine, "commit", self._commit)


def test_a_photo_takes_eight_commits_and_each_side_effect_follows_a_committed_state(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    write_image(inbox, "one.jpg")
    wid = add_watch(ctx, inbox)
    [pid] = poll_and_claim(ctx, wid)
    commits = Commits(ctx.engine, ctx.cfg.publishers.outbox.directory)
    try:
        pipeline.process_post(ctx, pid)
    finally:
        commits.close()
    with session_scope(ctx.engine) as s:
        post = s.get(Post, pid)
        assert post.status == states.PUBLISHED, post.last_error
        assert post.lease_owner is None and post.lease_expires_at is None  # released with the settling
        assert post.content_hash is not None
    # Read post, download (read, record + content hash), caption (read + admission, record), publish
    # (release, target read + holds + target in flight, published + settled + lease dropped). Was 16, then 9.
    assert len(commits.log) == 8, [stmts for stmts, _ in commits.log]
    in_flight = [i for i, (stmts, _) in enumerate(commits.log)
                 if any(q.startswith("UPDATE post_target SET") and "attempt_started_at" in q for q in stmts)]
    # The target is read, checked for holds (one query for its scopes' pauses) and marked in flight in one
    # transaction: nothing external happens in between.
    marked = commits.log[in_flight[0]][0]
    assert any(q.startswith("SELECT post_target.") for q in marked)
    assert sum(q.startswith("SELECT pause.") for q in marked) == 1
    done = [i for i, (stmts, _) in enumerate(commits.log)
            if any(q.startswith("UPDATE post SET") and "finished_at" in q for q in stmts)]
    assert len(in_flight) == 1 and len(done) == 1 and in_flight[0] < done[0]
    assert commits.log[in_flight[0]][1] == 0  # the target was committed in flight before the outbox wrote
    assert commits.log[done[0]][1] == 1
    # Nothing after the settling transaction: no separate lease release.
    assert done[0] == len(commits.log) - 1


def test_a_duplicate_found_when_the_download_is_recorded_is_skipped_and_its_image_deleted(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    same = jpeg_bytes(color=(10, 200, 10))
    write_image(inbox, "a.jpg", same)
    write_image(inbox, "b.jpg", same)
    wid = add_watch(ctx, inbox)
    for pid in poll_and_claim(ctx, wid):
        pipeline.process_post(ctx, pid)
    with session_scope(ctx.engine) as s:
        ps = list(s.exec(select(Post).order_by(Post.id)))
    assert [p.status for p in ps] == [states.PUBLISHED, states.SKIPPED]
    assert f"same photo (identical bytes) as post {ps[0].id}" in ps[1].last_error
    assert ps[1].content_hash is None and ps[1].media_key is None and ps[1].lease_owner is None
    assert not os.listdir(ctx.cfg.media_dir)  # the duplicate's prepared image went with it


def test_a_post_whose_lease_was_taken_meanwhile_is_left_alone(ctx, tmp_path):
    """The loop no longer re-reads the post between steps; a step that finds the lease gone on its
    commit says so and the loop stops there (the other owner carries on)."""
    inbox = tmp_path / "inbox"
    write_image(inbox, "one.jpg")
    wid = add_watch(ctx, inbox)
    [pid] = poll_and_claim(ctx, wid)
    original = pipeline._sha256

    def steal_lease(path):  # another replica took the lease while we downloaded (ours had expired)
        with session_scope(ctx.engine) as s:
            s.execute(sa.update(Post).where(Post.id == pid).values(lease_owner="other"))
        return original(path)

    pipeline._sha256 = steal_lease
    try:
        pipeline.process_post(ctx, pid)
    finally:
        pipeline._sha256 = original
    with session_scope(ctx.engine) as s:
        post = s.get(Post, pid)
        assert post.status == states.DOWNLOADED  # recorded, but not captioned by us
        assert post.lease_owner == "other"
