"""The pipeline end to end, in process: local folder -> template captioner -> outbox, on both databases."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import drain, jpeg_bytes, write_image
from PIL import Image
from sqlmodel import select

from aiposter.core import states
from aiposter.core.models import Post, PostEvent, PostTarget, SourceFile, Watch, utcnow
from aiposter.db import session_scope
from aiposter.services import users, watches


@pytest.fixture
def inbox(tmp_path):
    p = tmp_path / "inbox"
    p.mkdir()
    return p


def add_watch(ctx, inbox, **spec):
    inbox.mkdir(parents=True, exist_ok=True)
    with session_scope(ctx.engine) as s:
        try:
            owner = users.get_user_by_email(s, "ann@example.com")
        except users.NotFound:
            owner = users.create_user(s, "ann@example.com", "correct horse battery")
        w = watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(inbox), **spec),
                                 allow_any_folder=True)
        return w.id


def make_due(ctx, watch_id):
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).where(Watch.id == watch_id).values(next_poll_at=utcnow()))


def posts(ctx):
    with session_scope(ctx.engine) as s:
        return list(s.exec(select(Post).order_by(Post.id)))


def outbox_records(ctx):
    d = ctx.cfg.publishers.outbox.directory
    if not os.path.isdir(d):
        return []
    return sorted(json.loads(open(os.path.join(d, f)).read())["source_file"]
                  for f in os.listdir(d) if f.endswith(".json"))


def test_new_photo_goes_to_outbox_cleaned(ctx, inbox):
    wid = add_watch(ctx, inbox, backfill=False)
    drain(ctx)  # baseline: empty folder
    write_image(inbox, "beach_day.jpg", jpeg_bytes(size=(60, 40), orientation=6, gps=True,
                                                   taken="2024:07:01 10:00:00"))
    make_due(ctx, wid)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED, p.last_error
    assert outbox_records(ctx) == ["beach_day.jpg"]
    out = ctx.cfg.publishers.outbox.directory
    [jpg] = [f for f in os.listdir(out) if f.endswith(".jpg")]
    with Image.open(os.path.join(out, jpg)) as im:
        assert im.format == "JPEG"
        assert im.size == (40, 60)  # orientation 6 = rotated 90 degrees: applied
        exif = im.getexif()
        assert 0x8825 not in exif and not exif.get_ifd(0x8825)  # no GPS
        assert 0x0112 not in exif  # orientation tag gone with the rest of the metadata
    record = json.loads(open(os.path.join(out, jpg.replace(".jpg", ".json"))).read())
    assert "beach day" in record["caption"] and "2024-07-01" in record["caption"]
    assert p.capture_time is not None and p.capture_time.year == 2024
    # Image bytes are deleted once the post is done.
    assert not os.listdir(ctx.cfg.media_dir)
    assert p.media_key is None


def test_png_and_heic_are_converted(ctx, inbox):
    wid = add_watch(ctx, inbox)
    drain(ctx)
    write_image(inbox, "a.png", fmt="PNG")
    write_image(inbox, "b.heic", fmt="HEIF")
    make_due(ctx, wid)
    drain(ctx)
    assert [p.status for p in posts(ctx)] == [states.PUBLISHED, states.PUBLISHED]
    assert outbox_records(ctx) == ["a.png", "b.heic"]


def test_baseline_skips_existing_files_unless_backfill(ctx, inbox, tmp_path):
    write_image(inbox, "old.jpg")
    add_watch(ctx, inbox, backfill=False)
    drain(ctx)
    assert posts(ctx) == []
    with session_scope(ctx.engine) as s:
        [sf] = s.exec(select(SourceFile)).all()
        assert sf.status == states.SF_BASELINE

    other = tmp_path / "other"
    write_image(other, "old2.jpg")
    add_watch(ctx, other, backfill=True)
    drain(ctx)
    assert [p.file_name for p in posts(ctx)] == ["old2.jpg"]


@pytest.mark.parametrize("name,content,reason", [
    ("corrupt.jpg", jpeg_bytes()[:200], "corrupt"),
    ("zero.jpg", b"", "empty"),
    ("notes.txt", b"just some text\n", "not an image"),
])
def test_bad_files_fail_with_reason_and_daemon_continues(ctx, inbox, name, content, reason):
    wid = add_watch(ctx, inbox)
    drain(ctx)
    (inbox / name).write_bytes(content)
    make_due(ctx, wid)
    drain(ctx)
    write_image(inbox, "good.jpg")
    make_due(ctx, wid)
    drain(ctx)
    bad, good = posts(ctx)
    assert bad.status == states.FAILED and reason in bad.last_error
    with session_scope(ctx.engine) as s:
        [t] = s.exec(select(PostTarget).where(PostTarget.post_id == bad.id)).all()
        assert t.status == states.T_FAILED and reason in t.last_error
    assert good.status == states.PUBLISHED


def test_huge_file_fails_without_being_read(ctx, inbox):
    wid = add_watch(ctx, inbox)
    drain(ctx)
    with open(inbox / "huge.jpg", "wb") as fh:  # sparse 200 MB file
        fh.truncate(200 * 1024 * 1024)
    make_due(ctx, wid)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED
    assert "200.0 MB" in p.last_error and "max_file_bytes" in p.last_error


def test_decompression_bomb_is_refused(make_ctx, tmp_path):
    ctx = make_ctx(images={"max_pixels": 10_000})
    inbox = tmp_path / "in"
    wid = add_watch(ctx, inbox)
    drain(ctx)
    write_image(inbox, "bomb.png", fmt="PNG", size=(400, 400))
    make_due(ctx, wid)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED and "pixel" in p.last_error


def test_unsettled_file_waits_until_stable(make_ctx, tmp_path):
    ctx = make_ctx(watch_defaults={"settle_seconds": 3600})
    inbox = tmp_path / "in"
    wid = add_watch(ctx, inbox)
    drain(ctx)
    write_image(inbox, "writing.jpg")
    make_due(ctx, wid)
    drain(ctx)
    assert posts(ctx) == []
    with session_scope(ctx.engine) as s:
        assert s.exec(select(SourceFile)).one().status == states.SF_SETTLING
    # Quiet for long enough (the settle window shortened, as time passing would do): it is posted.
    ctx.cfg.watch_defaults.settle_seconds = 0
    ctx.reset_adapters()
    make_due(ctx, wid)
    drain(ctx)
    assert [p.status for p in posts(ctx)] == [states.PUBLISHED]


def test_maximum_age_skips_stale_files(ctx, inbox):
    wid = add_watch(ctx, inbox, maximum_age_hours=1.0)
    drain(ctx)
    write_image(inbox, "fresh.jpg")
    make_due(ctx, wid)
    drain(ctx)
    # A post that waited in the queue past maximum_age is skipped at publish time.
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, wid)
        w.enabled = False
    write_image(inbox, "late.jpg")
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).where(Watch.id == wid).values(enabled=True, next_poll_at=utcnow()))
    from aiposter.core import pipeline
    from aiposter.core import queue as wq

    with session_scope(ctx.engine) as s:
        [claimed] = wq.claim_watches(s, ctx.owner, 30, 10)
    pipeline.poll_watch(ctx, claimed)
    with session_scope(ctx.engine) as s:
        late = s.exec(select(Post).where(Post.file_name == "late.jpg")).one()
        late.source_time = utcnow() - timedelta(hours=3)
    drain(ctx)
    by_name = {p.file_name: p for p in posts(ctx)}
    assert by_name["fresh.jpg"].status == states.PUBLISHED
    assert by_name["late.jpg"].status == states.SKIPPED
    assert "maximum_age" in by_name["late.jpg"].last_error
    assert outbox_records(ctx) == ["fresh.jpg"]


def test_file_arriving_long_after_mtime_is_not_too_old(ctx, inbox, tmp_path):
    """A photo taken years ago but moved into the folder now is new: arrival, not mtime, counts."""
    wid = add_watch(ctx, inbox, maximum_age_hours=1.0)
    drain(ctx)
    outside = write_image(tmp_path / "elsewhere", "2019_trip.jpg")
    old = time.time() - 5 * 365 * 86400
    os.utime(outside, (old, old))
    os.rename(outside, inbox / "2019_trip.jpg")
    make_due(ctx, wid)
    drain(ctx)
    assert [p.status for p in posts(ctx)] == [states.PUBLISHED]


def test_posts_go_out_oldest_first_with_spacing(ctx, inbox):
    wid = add_watch(ctx, inbox, min_spacing_seconds=3600)
    drain(ctx)
    now = time.time()
    for i, name in enumerate(["c.jpg", "a.jpg", "b.jpg"]):
        p = write_image(inbox, name)
        os.utime(p, (now - 100 + i, now - 100 + i))
    make_due(ctx, wid)
    drain(ctx)
    ps = posts(ctx)
    published = [p for p in ps if p.status == states.PUBLISHED]
    waiting = [p for p in ps if p.status == states.CAPTIONED]
    assert len(published) == 1 and len(waiting) == 2
    assert all("min_spacing" in p.last_error for p in waiting)
    # Open the gate twice: the rest follow, one per gate, in arrival order.
    order = [published[0].file_name]
    for _ in range(2):
        with session_scope(ctx.engine) as s:
            s.execute(sa.update(Watch).where(Watch.id == wid).values(next_publish_at=utcnow()))
            s.execute(sa.update(Post).where(Post.status == states.CAPTIONED).values(next_attempt_at=utcnow()))
        drain(ctx)
        newly = [p for p in posts(ctx) if p.status == states.PUBLISHED and p.file_name not in order]
        assert len(newly) == 1
        order.append(newly[0].file_name)
    by_name = {p.file_name: p for p in posts(ctx)}
    assert order == sorted(order, key=lambda n: by_name[n].source_time)


def test_each_state_has_a_visible_reason(ctx, inbox):
    wid = add_watch(ctx, inbox)
    drain(ctx)
    write_image(inbox, "x.jpg")
    make_due(ctx, wid)
    drain(ctx)
    with session_scope(ctx.engine) as s:
        evs = [e.state for e in s.exec(select(PostEvent).order_by(PostEvent.id))]
    assert evs == [states.DETECTED, states.DOWNLOADED, states.CAPTIONED, states.PUBLISHING,
                   states.T_PUBLISHING, states.T_PUBLISHED, states.PUBLISHED]


def test_missing_folder_is_reported_on_the_watch(ctx, inbox):
    wid = add_watch(ctx, inbox)
    inbox.rmdir()
    drain(ctx)
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, wid)
        assert "does not exist" in w.last_poll_error
        assert w.next_poll_at > utcnow()


def test_an_unfinished_post_says_why_it_is_not_moving(ctx, inbox):
    from aiposter.core.models import User
    from aiposter.services.posts import waiting_for

    wid = add_watch(ctx, inbox)
    drain(ctx)
    write_image(inbox, "x.jpg")
    make_due(ctx, wid)
    from aiposter.core import pipeline
    from aiposter.core import queue as wq

    with session_scope(ctx.engine) as s:
        [claimed] = wq.claim_watches(s, ctx.owner, 30, 10)
    pipeline.poll_watch(ctx, claimed)  # detected, not processed yet

    def why():
        with session_scope(ctx.engine) as s:
            return waiting_for(s, s.exec(select(Post)).one())

    assert why() == "queued: its next step is due now"
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).values(enabled=False))
    assert "its watch is paused" in why()
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).values(enabled=True))
        s.execute(sa.update(User).values(processing_paused=True))
    assert "processing is paused for this account" in why()
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(User).values(processing_paused=False))
        s.execute(sa.update(Post).values(next_attempt_at=utcnow() + timedelta(hours=1),
                                          last_error="download: attempt 1 of 5 failed, retrying in 30s: x"))
    assert why().startswith("download: attempt 1 of 5 failed")
    with session_scope(ctx.engine) as s:
        wq.claim_posts(s, "replica-7", 30, 10, now=utcnow() + timedelta(hours=2))
    assert why() == "being processed now (by replica-7)"
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).values(lease_owner=None, lease_expires_at=None, next_attempt_at=utcnow()))
    drain(ctx)
    assert why() is None  # finished
