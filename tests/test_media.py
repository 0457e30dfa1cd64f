"""The media store shared by replicas: a step claimed by another replica finds the prepared image, the
housekeeping sweep removes only what no post in flight needs, and deletions go through the store."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from conftest import make_config
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, outbox_records, posts
from test_retries import _fast_forward

from aiposter.app import open_app
from aiposter.core import registry, states
from aiposter.core.daemon import sweep_media
from aiposter.core.errors import PublishError
from aiposter.core.models import Post, PostEvent
from aiposter.core.pipeline import Context
from aiposter.db import session_scope
from aiposter.publishers.outbox import OutboxPublisher


def test_a_publish_step_claimed_by_another_replica_finds_the_prepared_image(tmp_path, db_url):
    """Regression: replicas with their own data_dir but one shared media directory. Replica A downloads
    and captions, its publish attempt fails transiently; replica B claims the retry. B used to fail the
    post with "prepared image missing" (it looked in its own data_dir)."""
    shared = tmp_path / "shared-media"
    apps = [open_app(make_config(tmp_path / name, db_url, media={"directory": str(shared)},
                                 retry={"base_delay_seconds": 30, "max_delay_seconds": 60}), migrate=False)
            for name in ("a", "b")]
    try:
        a, b = (Context(x.cfg, x.engine, owner=f"replica-{n}-{uuid.uuid4().hex[:4]}", keyring=x.keyring)
                for n, x in zip("ab", apps, strict=True))

        def outbox(deps):
            if deps.cfg is a.cfg:  # replica A's platform connection is down
                class Down(OutboxPublisher):
                    def publish(self, req):
                        raise PublishError("503 Service Unavailable")
                return Down(deps.cfg)
            return OutboxPublisher(deps.cfg)

        with registry.override(registry.DESTINATION, "outbox", outbox):
            inbox = tmp_path / "inbox"
            wid = add_watch(a, inbox)
            drain(a)
            write_image(inbox, "p.jpg")
            make_due(a, wid)
            drain(a)
            [p] = posts(a)
            assert p.status == states.PUBLISHING and "503" in p.last_error
            assert (shared / p.media_key).is_file()
            assert not (b.cfg.data_dir / "media").exists() or not any((b.cfg.data_dir / "media").iterdir())
            _fast_forward(b)
            drain(b)
        [p] = posts(b)
        assert p.status == states.PUBLISHED, p.last_error
        assert outbox_records(b) == ["p.jpg"]
        assert not any(shared.iterdir())  # deleted from the shared store once done
    finally:
        for x in apps:
            x.close()


def test_the_sweep_removes_only_media_of_posts_no_longer_in_flight(ctx, tmp_path):
    wid = add_watch(ctx, tmp_path / "in")
    drain(ctx)
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "in", name)
    make_due(ctx, wid)
    drain(ctx)
    a, b = posts(ctx)
    media = ctx.media
    # Leftovers a crash could leave: a finished post's image and temp files, and an in-flight post's image.
    for name in (f"{a.id}.jpg", f".{a.id}.jpg.123.tmp", f"{a.id}.download", f"{a.id}.instagram.jpg",
                 f"{a.id}.threads.prepared", f"{b.id}.jpg", f"{b.id}.instagram.jpg", "999.jpg", "notes.txt"):
        (media.directory / name).write_bytes(b"x")
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).where(Post.id == b.id).values(status=states.CAPTIONED))
    assert sweep_media(ctx) == 6
    assert sorted(p.name for p in media.directory.iterdir()) == sorted([f"{b.id}.jpg", f"{b.id}.instagram.jpg",
                                                                        "notes.txt"])
    media.delete_post(b.id)  # what the pipeline does when a post is done: every copy goes
    assert [p.name for p in media.directory.iterdir()] == ["notes.txt"]


def test_a_prepared_image_gone_missing_is_downloaded_again(ctx, tmp_path):
    """The store lost the file between steps (e.g. a wiped volume): the post fetches it again instead of
    failing, and keeps its captions."""
    class WipesFirst(OutboxPublisher):
        wiped = False

        def publish(self, req):
            if not WipesFirst.wiped:
                WipesFirst.wiped = True
                req.media_path.unlink()
                raise PublishError("503 Service Unavailable")
            return super().publish(req)

    with registry.override(registry.DESTINATION, "outbox", lambda deps: WipesFirst(deps.cfg)):
        wid = add_watch(ctx, tmp_path / "in")
        drain(ctx)
        write_image(tmp_path / "in", "p.jpg")
        make_due(ctx, wid)
        drain(ctx)
        _fast_forward(ctx)
        drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED
    with session_scope(ctx.engine) as s:
        msgs = [e.message for e in s.exec(select(PostEvent).order_by(PostEvent.id))]
    assert "prepared image missing; downloading again" in msgs
    assert sum(1 for m in msgs if m.startswith("captioned")) == 1  # captions kept
