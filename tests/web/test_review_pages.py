"""The review queue, the watch form's review and schedule settings, and notifications on the Account page,
through the ASGI app on both databases, with the real pipeline (local folder -> template -> outbox)."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from helpers import drain, write_image
from sqlmodel import select

from aiposter.core import states
from aiposter.core.models import Post, Watch
from aiposter.core.pipeline import Context
from aiposter.db import session_scope

from .conftest import csrf_of, sign_in


@pytest.fixture
def ctx(application):
    return Context(application.cfg, application.engine, owner=f"test-{uuid.uuid4().hex[:6]}",
                   keyring=application.keyring, media=application.media)


def _form(csrf: str, folder, **extra) -> dict:
    return {"csrf": csrf, "name": "Shop", "source": "local", "folder": str(folder), "targets": "outbox",
            "interval_minutes": "5", "approval": "auto", "review_ttl_hours": "72", "daily_cap": "0",
            "min_spacing_minutes": "0", **extra}


def _review_watch(client, photos) -> int:
    csrf = csrf_of(client.get("/watches/new").text)
    r = client.post("/watches/new", data=_form(csrf, photos, approval="review", review_ttl_hours="12",
                                               schedule_windows="mon-sun 00:00-24:00", schedule_tz="Europe/Berlin",
                                               daily_cap="5"), follow_redirects=False)
    assert r.status_code == 303, r.text
    with session_scope(client.app.state.application.engine) as s:
        return s.exec(select(Watch).where(Watch.name == "Shop")).one().id


def _waiting(client, photos, ctx, *names) -> list[int]:
    for name in names:
        write_image(photos, name)
    drain(ctx)
    with session_scope(ctx.engine) as s:
        found = s.exec(select(Post).where(Post.file_name.in_(names)).order_by(Post.id)).all()
        assert [p.status for p in found] == [states.AWAITING_REVIEW] * len(names)
        return [p.id for p in found]


def _outbox(application) -> list[dict]:
    d = application.cfg.publishers.outbox.directory
    if not os.path.isdir(d):
        return []
    return [json.loads(open(os.path.join(d, f)).read()) for f in sorted(os.listdir(d)) if f.endswith(".json")]


def test_review_settings_are_saved_and_shown_in_the_form(client, ann, photos, application):
    sign_in(client, ann.email)
    wid = _review_watch(client, photos)
    with session_scope(application.engine) as s:
        w = s.get(Watch, wid)
        assert (w.approval, w.review_ttl_hours, w.schedule_tz, w.daily_cap) == ("review", 12, "Europe/Berlin", 5)
        assert w.schedule_windows == "mon-sun 00:00-24:00"
    page = client.get(f"/watches/{wid}/edit").text
    assert 'value="review" checked' in page and 'value="Europe/Berlin"' in page
    r = client.post(f"/watches/{wid}/edit", data=_form(csrf_of(page), photos, schedule_windows="mon 25:00-26:00",
                                                       schedule_tz="Mars/Olympus"))
    assert r.status_code == 422 and 'id="schedule_windows-error"' in r.text and "mon 25:00-26:00" in r.text
    r = client.post(f"/watches/{wid}/edit", data=_form(csrf_of(page), photos, schedule_tz="Mars/Olympus"))
    assert r.status_code == 422 and 'id="schedule_tz-error"' in r.text and 'value="Mars/Olympus"' in r.text
    r = client.post(f"/watches/{wid}/edit", data=_form(csrf_of(page), photos, review_ttl_hours="soon"))
    assert r.status_code == 422 and 'id="review_ttl_hours-error"' in r.text
    r = client.post(f"/watches/{wid}/edit", data=_form(csrf_of(page), photos), follow_redirects=False)
    assert r.status_code == 303
    with session_scope(application.engine) as s:
        w = s.get(Watch, wid)
        assert (w.approval, w.schedule_tz, w.schedule_windows) == ("auto", None, None)


def test_review_queue_edit_over_limit_approve_publishes_once(client, ann, photos, ctx, application):
    sign_in(client, ann.email)
    assert "Nothing waits for your review" in client.get("/review").text
    _review_watch(client, photos)
    first, second = _waiting(client, photos, ctx, "a_beach.jpg", "b_cake.jpg")
    assert "2 posts waiting for your review" in client.get("/").text
    r = client.get("/review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/review/{first}"
    page = client.get(f"/review/{first}").text
    assert "Post 1 of 2" in page and f'href="/review/{second}" data-key="j"' in page
    assert f'src="/review/{first}/image"' in page and 'data-limit="500"' in page
    img = client.get(f"/review/{first}/image")
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8" and "no-store" in img.headers["cache-control"]
    tid = int(page.split('name="caption-')[1].split('"')[0])
    csrf = csrf_of(page)

    too_long = "x" * 501
    r = client.post(f"/review/{first}", data={"csrf": csrf, f"caption-{tid}": too_long, "alt_text": "A beach",
                                              "action": "approve"})
    assert r.status_code == 422
    assert f'id="caption-{tid}-error"' in r.text and "501 characters; the limit is 500" in r.text
    assert too_long in r.text  # the input is kept
    r = client.post(f"/review/{first}", data={"csrf": csrf, f"caption-{tid}": "Two #tags #here", "action": "save"})
    assert r.status_code == 422 and "2 hashtags; the limit is 1" in r.text
    assert _outbox(application) == []

    r = client.post(f"/review/{first}", data={"csrf": csrf, f"caption-{tid}": "  Sunny beach #summer ",
                                              "alt_text": "A sandy beach", "action": "save"}, follow_redirects=False)
    assert r.status_code == 303 and "Edits+saved" in r.headers["location"]
    assert "Sunny beach #summer</textarea>" in client.get(f"/review/{first}").text
    r = client.post(f"/review/{first}", data={"csrf": csrf, f"caption-{tid}": "Sunny beach #summer",
                                              "alt_text": "A sandy beach", "action": "approve"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(f"/review/{second}?done=")
    drain(ctx)
    drain(ctx)
    records = _outbox(application)
    assert [(x["caption"], x["alt_text"]) for x in records] == [("Sunny beach #summer", "A sandy beach")]
    assert client.get(f"/review/{first}/image").status_code == 404  # the image is gone once published
    assert "no longer waiting for review" in client.get(f"/review/{first}").text

    r = client.post(f"/review/{second}/regenerate", data={"csrf": csrf, "instruction": "shorter"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/review?done=")
    drain(ctx)
    with session_scope(application.engine) as s:
        assert s.get(Post, second).status == states.AWAITING_REVIEW  # back in the queue with new captions
    r = client.post(f"/review/{second}/reject", data={"csrf": csrf, "reason": "blurry"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/review?done=")
    with session_scope(application.engine) as s:
        p = s.get(Post, second)
        assert p.status == states.REJECTED and "blurry" in p.last_error and p.media_key is None
    assert len(_outbox(application)) == 1


def test_review_actions_need_csrf_and_another_users_item_is_404(client, ann, bob, photos, ctx, application):
    sign_in(client, ann.email)
    _review_watch(client, photos)
    (pid,) = _waiting(client, photos, ctx, "mine.jpg")
    for path in (f"/review/{pid}", f"/review/{pid}/regenerate", f"/review/{pid}/reject"):
        r = client.post(path, data={"action": "approve"})
        assert r.status_code == 403 and "security token" in r.text
    with session_scope(application.engine) as s:
        assert s.get(Post, pid).status == states.AWAITING_REVIEW
    other = client.__class__(client.app)
    sign_in(other, bob.email)
    csrf = csrf_of(other.get("/account").text)
    for path in (f"/review/{pid}", f"/review/{pid}/image"):
        r = other.get(path)
        assert r.status_code == 404 and "mine.jpg" not in r.text
    for path in (f"/review/{pid}", f"/review/{pid}/regenerate", f"/review/{pid}/reject"):
        assert other.post(path, data={"csrf": csrf, "action": "approve"}).status_code == 404
    assert "Nothing waits for your review" in other.get("/review").text
    with session_scope(application.engine) as s:
        assert s.get(Post, pid).status == states.AWAITING_REVIEW


def test_notification_urls_and_a_test_message(client, ann, application):
    from test_notify import Receiver

    receiver = Receiver()
    try:
        sign_in(client, ann.email)
        page = client.get("/account").text
        assert "No notification URL yet" in page
        r = client.post("/account/notifications/test", data={"csrf": csrf_of(page)})
        assert r.status_code == 422 and "add one first" in r.text
        r = client.post("/account/notifications", data={"csrf": csrf_of(page), "url": "nonsense://x",
                                                         "label": "phone"})
        assert r.status_code == 422 and 'id="notify_url-error"' in r.text and 'value="nonsense://x"' in r.text
        assert client.post("/account/notifications", data={"url": receiver.url}).status_code == 403
        r = client.post("/account/notifications", data={"csrf": csrf_of(page), "url": receiver.url + "?secret=hushhush",
                                                         "label": "hook"})
        assert r.status_code == 200 and "Notification URL added" in r.text and "hushhush" not in r.text
        r = client.post("/account/notifications/test", data={"csrf": csrf_of(page)})
        assert r.status_code == 200 and "Test notification sent" in r.text
        assert receiver.messages and receiver.messages[0]["title"] == "aiposter: test notification"
        cid = int(r.text.split('action="/account/notifications/')[1].split("/")[0])
        r = client.post(f"/account/notifications/{cid}/remove", data={"csrf": csrf_of(page)})
        assert r.status_code == 200 and "No notification URL yet" in r.text
    finally:
        receiver.close()


def test_sessions_list_and_ending_another_users_session_is_404(client, ann, bob):
    sign_in(client, ann.email)
    page = client.get("/account").text
    assert "this browser" in page
    other = client.__class__(client.app)
    sign_in(other, bob.email)
    bob_page = other.get("/account").text
    sid = int(bob_page.split("/account/sessions/")[1].split("/")[0]) if "/account/sessions/" in bob_page else None
    assert sid is not None  # bob's API token is another live session of his
    assert client.post(f"/account/sessions/{sid}/end", data={"csrf": csrf_of(page)}).status_code == 404
    r = other.post(f"/account/sessions/{sid}/end", data={"csrf": csrf_of(bob_page)})
    assert r.status_code == 200 and "That session was signed out" in r.text
