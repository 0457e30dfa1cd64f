"""The pages make no database queries beyond what the API makes for the same data: they call the same
services, and nothing in a template reaches back into the database (no lazy loads, no per-row queries)."""

from __future__ import annotations

from contextlib import contextmanager

import sqlalchemy as sa

from aiposter.core.models import Post, PostEvent, PostTarget
from aiposter.db import session_scope
from aiposter.services import auth, users, watches

from .conftest import sign_in

STATUSES = ["detected", "captioned", "publishing", "published", "failed", "partial"]


@contextmanager
def counting(engine):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def _seed(engine, email: str, folder, n: int = 30) -> None:
    with session_scope(engine) as s:
        user = users.get_user_by_email(s, email)
        cfg_folder = str(folder)
        w = watches.Watch(user_id=user.id, folder=cfg_folder, name="photos")
        s.add(w)
        s.flush()
        for i in range(n):
            p = Post(user_id=user.id, watch_id=w.id, source_ref=f"{i}.jpg", file_name=f"img{i}.jpg",
                     folder_name="photos", status=STATUSES[i % len(STATUSES)], last_error="boom" if i % 3 else None)
            s.add(p)
            s.flush()
            s.add(PostTarget(post_id=p.id, platform="outbox", status="pending", paused_by="destination:outbox"))
            s.add(PostEvent(post_id=p.id, state=p.status, message="seeded"))


def _queries(engine, call) -> int:
    call()  # warm: a session's first use may write its last-used time
    with counting(engine) as statements:
        r = call()
    assert r.status_code == 200, r.text[:300]
    return len(statements)


def test_dashboard_and_posts_list_add_no_queries(client, application, ann, photos):
    engine = application.engine
    _seed(engine, ann.email, photos)
    api = client.__class__(client.app)
    sign_in(client, ann.email)
    # The API keeps bearer lookups for 2 s (services.auth); the pages look their cookie session up on every
    # request. The API is measured with that cache cleared, so both sides authenticate from the database and
    # the comparison is of the data queries.
    get = lambda path: lambda: (auth._cache.clear(), api.get(path, headers=ann.headers))[1]  # noqa: E731
    auth_only = _queries(engine, get("/api/v1/me"))
    api_posts = _queries(engine, get("/api/v1/posts?limit=50"))
    api_posts_20 = _queries(engine, get("/api/v1/posts?limit=20"))
    api_failed = _queries(engine, get("/api/v1/posts?limit=50&status=failed"))
    api_watches = _queries(engine, get("/api/v1/watches"))
    api_connections = _queries(engine, get("/api/v1/connections"))

    htmx = {"HX-Request": "true"}
    web_posts = _queries(engine, lambda: client.get("/posts", headers=htmx))
    assert web_posts <= api_posts
    assert _queries(engine, lambda: client.get("/posts?status=failed", headers=htmx)) <= api_failed
    # the full page also fills the watch filter: one query, fewer than GET /watches makes
    assert _queries(engine, lambda: client.get("/posts")) <= api_posts + api_watches - auth_only
    # the dashboard: recent posts, connections and watches as the API gives them, plus the counts per status
    api_dashboard = api_posts_20 + api_connections + api_watches - 2 * auth_only + 1
    assert _queries(engine, lambda: client.get("/partials/dashboard")) <= api_dashboard
    assert _queries(engine, lambda: client.get("/")) <= api_dashboard
