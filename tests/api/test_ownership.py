"""Every owned resource, through every route: the owner gets it, another user gets a 404 that says nothing,
a user gets 403 on admin routes."""

from __future__ import annotations

import pytest

from .seed import seed

# (method, path template, json body, status for the owner)
ROUTES = [
    ("GET", "/api/v1/watches/{watch}", None, 200),
    ("PATCH", "/api/v1/watches/{watch}", {"name": "renamed"}, 200),
    ("POST", "/api/v1/watches/{watch}/pause", None, 200),
    ("POST", "/api/v1/watches/{watch}/resume", None, 200),
    ("POST", "/api/v1/watches/{watch}/poll", None, 200),
    ("GET", "/api/v1/posts/{post}", None, 200),
    ("POST", "/api/v1/posts/{post}/targets/{target}/retry", None, 200),
    ("GET", "/api/v1/connections/{connection}", None, 200),
    ("DELETE", "/api/v1/posts/{post}", None, 200),
    ("DELETE", "/api/v1/watches/{watch}", None, 200),
    ("DELETE", "/api/v1/connections/{connection}", None, 200),
]


@pytest.fixture
def anns(application, ann, photos):
    return seed(application, ann.email, photos, "annmarker")


@pytest.mark.parametrize(("method", "path", "body", "expected"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_owner_gets_it_another_user_gets_404(client, ann, bob, anns, method, path, body, expected):
    url = path.format(**anns)
    r = client.request(method, url, headers=bob.headers, json=body)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"
    assert "annmarker" not in r.text
    r = client.request(method, url, headers=ann.headers, json=body)
    assert r.status_code == expected, r.text


def test_lists_show_only_your_own(client, application, ann, bob, anns, photos):
    bobs = seed(application, bob.email, photos, "bobmarker")
    for path, key in (("/api/v1/watches", None), ("/api/v1/posts", "items"), ("/api/v1/connections", None)):
        a = client.get(path, headers=ann.headers).json()
        b = client.get(path, headers=bob.headers).json()
        a, b = (a[key], b[key]) if key else (a, b)
        assert len(a) == len(b) == 1
        assert "annmarker" in str(a) and "bobmarker" not in str(a)
        assert "bobmarker" in str(b) and "annmarker" not in str(b)
    # Filtering by another user's watch finds nothing.
    r = client.get("/api/v1/posts", params={"watch_id": anns["watch"]}, headers=bob.headers)
    assert r.status_code == 200 and r.json()["items"] == []
    assert bobs["watch"] != anns["watch"]


def test_retrying_another_users_target_through_your_own_post_is_404(client, application, ann, bob, anns, photos):
    bobs = seed(application, bob.email, photos, "bobmarker")
    r = client.post(f"/api/v1/posts/{bobs['post']}/targets/{anns['target']}/retry", headers=bob.headers)
    assert r.status_code == 404


def test_a_watch_cannot_target_another_users_connection(client, ann, bob, anns, photos):
    bobs_folder = photos.parent.parent / bob.email
    bobs_folder.mkdir()
    r = client.post("/api/v1/watches", headers=bob.headers,
                    json={"folder": str(bobs_folder), "targets": [f"facebook:{anns['connection']}"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "targets"


ADMIN_ROUTES = [("GET", "/api/v1/users", None), ("POST", "/api/v1/users", {"email": "x@example.com"}),
                ("GET", "/api/v1/users/{id}", None), ("POST", "/api/v1/users/{id}/disable", None),
                ("POST", "/api/v1/users/{id}/enable", None), ("DELETE", "/api/v1/users/{id}", None)]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
def test_admin_routes_are_403_for_users_and_401_without_token(client, ann, bob, method, path, body):
    url = path.format(id=bob.id)
    r = client.request(method, url, headers=ann.headers, json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.request(method, url, json=body).status_code == 401
    assert client.get("/api/v1/me", headers=bob.headers).status_code == 200  # nothing happened to bob
