"""Review before publishing, through the API and the real pipeline (local folder -> template -> outbox)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import drain, write_image
from sqlmodel import select

from aiposter.core import states
from aiposter.core.media import post_key
from aiposter.core.models import Post, PostEvent, PostTarget, utcnow
from aiposter.core.pipeline import Context
from aiposter.db import session_scope


@pytest.fixture
def ctx(application):
    return Context(application.cfg, application.engine, owner=f"test-{uuid.uuid4().hex[:6]}",
                   keyring=application.keyring, media=application.media)


def _watch(client, ann, photos, **extra):
    r = client.post("/api/v1/watches", headers=ann.headers,
                    json={"folder": str(photos), "backfill": True, "approval": "review", **extra})
    assert r.status_code in (200, 201), r.text
    assert r.json()["approval"] == "review"
    return r.json()["id"]


def _captioned_post(client, ann, photos, ctx, name="beach_day.jpg", **extra) -> int:
    _watch(client, ann, photos, **extra)
    write_image(photos, name)
    drain(ctx)
    with session_scope(ctx.engine) as s:
        post = s.exec(select(Post).where(Post.file_name == name)).one()
        assert post.status == states.AWAITING_REVIEW
        return post.id


def _outbox(application) -> list[dict]:
    d = application.cfg.publishers.outbox.directory
    if not os.path.isdir(d):
        return []
    return [json.loads(open(os.path.join(d, f)).read()) for f in sorted(os.listdir(d)) if f.endswith(".json")]


def test_review_edit_approve_publishes_the_edited_caption_exactly_once(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx)
    assert _outbox(application) == []  # nothing goes out before approval
    r = client.get(f"/api/v1/posts/{pid}/review", headers=ann.headers)
    assert r.status_code == 200
    view = r.json()
    assert view["targets"][0]["platform"] == "outbox" and view["targets"][0]["caption"]
    img = client.get(view["image_url"], headers=ann.headers)
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
    assert client.get(f"/api/v1/posts/{pid}", headers=ann.headers).json()["waiting_for"].startswith(
        "waiting for review")

    tid = view["targets"][0]["id"]
    r = client.patch(f"/api/v1/posts/{pid}/review", headers=ann.headers,
                     json={"captions": {str(tid): "  Sunny day at the beach #summer  "},
                           "alt_text": "A sandy beach under a blue sky"})
    assert r.status_code == 200, r.text
    assert r.json()["targets"][0]["caption"] == "Sunny day at the beach #summer"
    assert r.json()["alt_text"] == "A sandy beach under a blue sky"

    r = client.post(f"/api/v1/posts/{pid}/approve", headers=ann.headers, json={})
    assert r.status_code == 200, r.text
    drain(ctx)
    drain(ctx)  # a second round finds nothing to send again
    records = _outbox(application)
    assert [x["caption"] for x in records] == ["Sunny day at the beach #summer"]
    assert records[0]["alt_text"] == "A sandy beach under a blue sky"
    detail = client.get(f"/api/v1/posts/{pid}", headers=ann.headers).json()
    assert detail["status"] == states.PUBLISHED
    actors = {e["message"]: e["actor"] for e in detail["events"] if e["actor"]}
    assert actors["outbox: caption edited"] == f"user:{ann.id} ann@example.com"
    assert actors["outbox: approved"] == f"user:{ann.id} ann@example.com"
    # Once published, the preview is gone with the image.
    assert client.get(f"/api/v1/posts/{pid}/image", headers=ann.headers).status_code == 404


def test_over_limit_edit_is_a_422_naming_platform_limit_and_count(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx)
    with session_scope(ctx.engine) as s:  # a Threads target (the outbox has no limit of its own)
        s.add(PostTarget(post_id=pid, platform="threads"))
    r = client.patch(f"/api/v1/posts/{pid}/review", headers=ann.headers, json={"captions": {"threads": "x" * 501}})
    assert r.status_code == 422
    msg = r.json()["error"]["message"]
    assert "threads" in msg and "500" in msg and "501" in msg
    with session_scope(ctx.engine) as s:  # nothing was stored
        assert all(t.caption is None for t in s.exec(select(PostTarget).where(PostTarget.post_id == pid)))


def test_approve_single_target_skips_the_others(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx)
    with session_scope(ctx.engine) as s:
        extra = PostTarget(post_id=pid, platform="threads")
        s.add(extra)
        s.flush()
        extra_id = extra.id
        outbox_id = s.exec(select(PostTarget.id).where(PostTarget.post_id == pid,
                                                       PostTarget.platform == "outbox")).one()
    r = client.post(f"/api/v1/posts/{pid}/approve", headers=ann.headers, json={"target_ids": [outbox_id]})
    assert r.status_code == 200, r.text
    by_id = {t["id"]: t for t in r.json()["targets"]}
    assert by_id[extra_id]["status"] == states.T_SKIPPED
    drain(ctx)
    assert len(_outbox(application)) == 1


def test_reject_deletes_the_image_at_once(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx)
    assert application.media.exists(post_key(pid))
    r = client.post(f"/api/v1/posts/{pid}/reject", headers=ann.headers, json={"reason": "off brand"})
    assert r.status_code == 200 and r.json()["status"] == states.REJECTED
    assert not application.media.exists(post_key(pid))
    drain(ctx)
    assert _outbox(application) == []
    events = client.get(f"/api/v1/posts/{pid}", headers=ann.headers).json()["events"]
    assert events[-1]["state"] == states.REJECTED and "off brand" in events[-1]["message"]
    assert client.post(f"/api/v1/posts/{pid}/approve", headers=ann.headers, json={}).status_code == 409


def test_expired_review_deletes_the_image_and_publishes_nothing(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx, review_ttl_hours=1)
    with session_scope(ctx.engine) as s:
        p = s.get(Post, pid)
        assert p.review_expires_at - utcnow() > timedelta(minutes=50)
    drain(ctx)  # not yet due: stays in review
    with session_scope(ctx.engine) as s:
        assert s.get(Post, pid).status == states.AWAITING_REVIEW
        past = utcnow() - timedelta(seconds=1)
        s.execute(sa.update(Post).where(Post.id == pid).values(review_expires_at=past, next_attempt_at=past))
    drain(ctx)
    with session_scope(ctx.engine) as s:
        p = s.get(Post, pid)
        assert p.status == states.EXPIRED and p.media_key is None
    assert not application.media.exists(post_key(pid))
    assert _outbox(application) == []


def test_regenerate_with_instruction_returns_to_review_and_counts_usage(client, ann, photos, ctx, application):
    pid = _captioned_post(client, ann, photos, ctx)
    tid = client.get(f"/api/v1/posts/{pid}/review", headers=ann.headers).json()["targets"][0]["id"]
    client.patch(f"/api/v1/posts/{pid}/review", headers=ann.headers, json={"captions": {str(tid): "mine"}})
    r = client.post(f"/api/v1/posts/{pid}/regenerate", headers=ann.headers, json={"instruction": "shorter"})
    assert r.status_code == 200 and r.json()["status"] == states.DOWNLOADED
    drain(ctx)
    view = client.get(f"/api/v1/posts/{pid}/review", headers=ann.headers).json()
    assert view["status"] == states.AWAITING_REVIEW
    assert view["targets"][0]["edited"] is False and view["targets"][0]["caption"] != "mine"
    assert view["usage"].get("captionings") == 2
    with session_scope(ctx.engine) as s:
        msgs = [e.message for e in s.exec(select(PostEvent).where(PostEvent.post_id == pid))]
    assert "new captions requested: shorter" in msgs


def test_review_is_owner_only(client, ann, bob, photos, ctx):
    pid = _captioned_post(client, ann, photos, ctx)
    for method, path, body in [("get", "review", None), ("get", "image", None), ("post", "approve", {}),
                               ("post", "reject", {}), ("patch", "review", {"alt_text": "x"}),
                               ("post", "publish-now", None), ("post", "regenerate", {})]:
        kw = {"json": body} if body is not None else {}
        r = getattr(client, method)(f"/api/v1/posts/{pid}/{path}", headers=bob.headers, **kw)
        assert r.status_code == 404, (path, r.status_code)
    with session_scope(ctx.engine) as s:
        assert s.get(Post, pid).status == states.AWAITING_REVIEW
