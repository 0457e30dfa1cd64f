"""The fast read endpoints (GET /posts, GET /watches): same answers as the ORM path, and revocation through
their short token cache takes effect at once in this process and within auth.CACHE_SECONDS from another."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from helpers import wait_for

from aiposter.api.schemas import PostPage, WatchOut
from aiposter.core import states
from aiposter.core.models import AuthSession, Post, utcnow
from aiposter.db import session_scope
from aiposter.services import auth, posts, watches

from .seed import seed


def _lists(client, person):
    return [client.get(p, headers=person.headers).status_code for p in ("/api/v1/posts", "/api/v1/watches")]


def test_logout_stops_the_read_endpoints_at_once(client, ann):
    assert _lists(client, ann) == [200, 200]  # now cached
    assert client.post("/api/v1/auth/logout", headers=ann.headers).status_code == 200
    assert _lists(client, ann) == [401, 401]


def test_disabling_a_user_stops_the_read_endpoints_at_once(client, admin, ann):
    assert _lists(client, ann) == [200, 200]
    assert client.post(f"/api/v1/users/{ann.id}/disable", headers=admin.headers).status_code == 200
    assert _lists(client, ann) == [401, 401]


def test_a_revocation_by_another_process_lands_within_the_cache_time(client, application, ann):
    assert _lists(client, ann) == [200, 200]
    # As the CLI or a second worker would: a plain UPDATE, no ORM session of this process sees it.
    with application.engine.begin() as conn:
        conn.execute(sa.update(AuthSession).values(revoked_at=utcnow()))
    assert wait_for(lambda: _lists(client, ann) == [401, 401], auth.CACHE_SECONDS + 5), \
        "the revoked token still works"


def test_the_list_answers_match_the_orm_path_for_finished_and_waiting_posts(client, application, ann, photos):
    ids = seed(application, ann.email, photos, "a")
    with session_scope(application.engine) as s:
        waiting = Post(user_id=ann.id, watch_id=ids["watch"], source_ref="b.jpg", file_name="b.jpg",
                       status=states.CAPTIONED, next_attempt_at=utcnow() + timedelta(hours=1), last_error="later")
        s.add(waiting)
    body = client.get("/api/v1/posts", headers=ann.headers).json()
    with session_scope(application.engine) as s:
        user = s.get(type(ann.user(application.engine)), ann.id)
        want = [posts.post_dict(s, p) for p in posts.list_posts(s, user)]
        want_watches = watches.watch_dicts(s, watches.list_watches(s, user))
    # Exactly what the response models render from the ORM path (the previous implementation).
    assert body == PostPage.model_validate({"items": want, "next_cursor": None}).model_dump(mode="json")
    assert [p["waiting_for"] for p in body["items"]] == [w["waiting_for"] for w in want]
    assert body["items"][0]["waiting_for"] == "later"
    assert [p["id"] for p in body["items"]] == [w["id"] for w in want]
    assert [p["created_at"][:19] for p in body["items"]] == [w["created_at"][:19] for w in want]
    got = client.get("/api/v1/watches", headers=ann.headers).json()
    assert [(w["id"], w["targets"], w["status"]) for w in got] == [
        (w["id"], w["targets"], w["status"]) for w in want_watches]
    assert got == [WatchOut.model_validate(w).model_dump(mode="json") for w in want_watches]
    assert got[0]["targets"] == ["outbox", f"facebook:{ids['connection']}"]


def test_the_lists_keep_each_users_rows_their_order_pages_and_every_watch_status(client, application, ann, bob,
                                                                                  photos, bobs_photos):
    """The read endpoints build their dicts from plain row tuples: same fields, same order, same statuses as
    the ORM path, and never another user's rows."""
    mine, theirs = seed(application, ann.email, photos, "a"), seed(application, bob.email, bobs_photos, "b")
    with session_scope(application.engine) as s:
        for i, status in enumerate([states.DETECTED, states.PUBLISHED, states.AWAITING_REVIEW, states.SKIPPED] * 2):
            s.add(Post(user_id=ann.id, watch_id=mine["watch"], source_ref=f"p{i}.jpg", file_name=f"p{i}.jpg",
                       status=status, next_attempt_at=utcnow() + timedelta(minutes=i)))
            s.add(Post(user_id=bob.id, watch_id=theirs["watch"], source_ref=f"q{i}.jpg", file_name=f"q{i}.jpg",
                       status=status))
        user = s.get(type(ann.user(application.engine)), ann.id)
        for i, (enabled, error) in enumerate([(False, None), (True, "folder missing"), (True, "waiting: reconnect")]):
            w = watches.create_watch(s, application.cfg, user, watches.WatchSpec(folder=str(photos), name=f"s{i}"),
                                     allow_any_folder=True)
            w.enabled, w.last_poll_error = enabled, error
    pages, cursor = [], None
    while True:
        body = client.get("/api/v1/posts", params={"limit": 3, **({"cursor": cursor} if cursor else {})},
                          headers=ann.headers).json()
        pages += body["items"]
        if not (cursor := body["next_cursor"]):
            break
    got_watches = client.get("/api/v1/watches", headers=ann.headers).json()
    with session_scope(application.engine) as s:
        user = s.get(type(ann.user(application.engine)), ann.id)
        want = [posts.post_dict(s, p) for p in posts.list_posts(s, user)]
        want_watches = watches.watch_dicts(s, watches.list_watches(s, user))
    assert pages == PostPage.model_validate({"items": want, "next_cursor": None}).model_dump(mode="json")["items"]
    assert [p["id"] for p in pages] == sorted((p["id"] for p in pages), reverse=True) and len(pages) == 9
    assert {p["file_name"][0] for p in pages} == {"p", "a"}  # none of bob's
    assert [p["waiting_for"] is not None for p in pages] == [p["status"] in states.POST_ACTIVE for p in pages]
    assert got_watches == [WatchOut.model_validate(w).model_dump(mode="json") for w in want_watches]
    assert [w["status"] for w in got_watches] == ["active", "paused", "error", "waiting"]
    filtered = client.get("/api/v1/posts", params={"status": states.AWAITING_REVIEW}, headers=ann.headers).json()
    assert [p["file_name"] for p in filtered["items"]] == ["p6.jpg", "p2.jpg"]
