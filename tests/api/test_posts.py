"""Posts through the API: filters, cursor pagination, detail, retry, delete."""

from __future__ import annotations

import pytest

from aiposter.core import states
from aiposter.core.models import Post, PostTarget
from aiposter.db import session_scope

from .seed import seed


@pytest.fixture
def many(application, ann, photos):
    ids = seed(application, ann.email, photos, "first")
    with session_scope(application.engine) as s:
        for i in range(23):
            s.add(Post(user_id=ann.id, watch_id=ids["watch"], source_ref=f"f{i}.jpg", file_name=f"f{i}.jpg",
                       status=states.PUBLISHED if i % 2 else states.DETECTED))
    return ids


def test_cursor_pagination_walks_every_post_once_newest_first(client, ann, many):
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 5} if cursor is None else {"limit": 5, "cursor": cursor}
        r = client.get("/api/v1/posts", headers=ann.headers, params=params)
        page = r.json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 24 and seen == sorted(seen, reverse=True)


def test_filters(client, ann, many):
    def ids(**params):
        return [p["status"] for p in client.get("/api/v1/posts", headers=ann.headers, params=params).json()["items"]]

    assert ids(status="published") == ["published"] * 11
    assert ids(status="failed") == ["failed"]
    assert len(ids(watch_id=many["watch"])) == 24
    r = client.get("/api/v1/posts", headers=ann.headers, params={"status": "lost"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "status"
    r = client.get("/api/v1/posts", headers=ann.headers, params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"


def test_detail_shows_targets_platform_ids_errors_and_history(client, ann, many):
    d = client.get(f"/api/v1/posts/{many['post']}", headers=ann.headers).json()
    assert d["status"] == "failed" and d["captions"] == {"facebook": "first"}
    by_platform = {t["platform"]: t for t in d["targets"]}
    assert by_platform["facebook"]["status"] == "failed" and "boom" in by_platform["facebook"]["last_error"]
    assert by_platform["outbox"]["platform_post_id"] == "out-first"
    assert [e["message"] for e in d["events"]] == ["failed first"]


def test_retry_a_failed_target(client, application, ann, many):
    url = f"/api/v1/posts/{many['post']}/targets/{many['target']}/retry"
    d = client.post(url, headers=ann.headers).json()
    assert d["status"] == "detected"  # the image is gone: fetch it again
    assert {t["platform"]: t["status"] for t in d["targets"]} == {"facebook": "pending", "outbox": "published"}
    r = client.post(f"/api/v1/posts/{many['post']}/targets/{many['published_target']}/retry", headers=ann.headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "target_id"
    with session_scope(application.engine) as s:
        assert s.get(PostTarget, many["target"]).attempts == 0


def test_delete_a_post_record(client, application, ann, many):
    media = application.cfg.media_dir / f"{many['post']}.jpg"
    media.write_bytes(b"jpeg")
    assert client.delete(f"/api/v1/posts/{many['post']}", headers=ann.headers).status_code == 200
    assert client.get(f"/api/v1/posts/{many['post']}", headers=ann.headers).status_code == 404
    assert not media.exists()
    with session_scope(application.engine) as s:
        assert s.get(PostTarget, many["target"]) is None
