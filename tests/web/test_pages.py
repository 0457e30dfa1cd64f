"""The pages through the ASGI app: sessions, CSRF, every page renders, errors keep the input."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from aiposter.api.app import create_app
from aiposter.web.session import COOKIE

from .conftest import PASSWORD, csrf_of, sign_in

PAGES = ["/", "/watches", "/watches/new", "/posts", "/drive", "/social", "/account", "/faq"]


def test_pages_need_a_session_and_the_cookie_is_httponly_lax(client, ann):
    r = client.get("/watches", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/watches"
    r = sign_in(client, ann.email)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # served over http here
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert "<main" in r.text and "Sign out" in r.text
        assert r.headers["cache-control"] == "no-store"  # private pages stay out of caches
        assert "script-src 'self';" in r.headers["content-security-policy"]  # no inline script, no eval
        assert "//" not in r.text.split("<body")[0].replace("<!doctype html>", "")  # no third-party asset
    assert client.get("/admin").status_code == 403


def test_wrong_password_keeps_the_email_and_is_rate_limited(client, ann):
    r = client.get("/login")
    r = client.post("/login", data={"email": ann.email, "password": "nope", "csrf": csrf_of(r.text)})
    assert r.status_code == 401 and "wrong email or password" in r.text and f'value="{ann.email}"' in r.text
    statuses = set()
    for _ in range(12):
        r = client.post("/login", data={"email": ann.email, "password": "nope", "csrf": csrf_of(r.text)})
        statuses.add(r.status_code)
    assert 429 in statuses


def test_forms_without_the_csrf_token_are_refused(client, ann):
    sign_in(client, ann.email)
    r = client.post("/account/pause", data={})
    assert r.status_code == 403 and "security token" in r.text
    r = client.post("/login", data={"email": ann.email, "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403
    page = client.get("/account").text
    assert client.post("/account/pause", data={"csrf": csrf_of(page)}, follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_row(client, ann, application):
    sign_in(client, ann.email)
    token = client.cookies.get(COOKIE)
    page = client.get("/").text
    assert client.post("/logout", data={"csrf": csrf_of(page)}, follow_redirects=False).status_code == 303
    # the same token no longer works as a bearer token either: it is the same session row
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_password_change_ends_other_sessions(application, ann):
    with TestClient(create_app(application)) as one, TestClient(create_app(application)) as two:
        sign_in(one, ann.email)
        sign_in(two, ann.email)
        page = one.get("/account").text
        r = one.post("/account/password", data={"csrf": csrf_of(page), "current_password": "wrong",
                                                 "new_password": "another horse battery staple"})
        assert r.status_code == 422 and 'id="current_password-error"' in r.text
        r = one.post("/account/password", data={"csrf": csrf_of(page), "current_password": PASSWORD,
                                                 "new_password": "another horse battery staple"})
        assert r.status_code == 200 and "2 other session(s) signed out" in r.text  # the API token and two
        assert two.get("/", follow_redirects=False).status_code == 303
        assert one.get("/", follow_redirects=False).status_code == 200


def test_watch_form_error_names_the_field_and_keeps_the_input(client, ann, photos):
    sign_in(client, ann.email)
    page = client.get("/watches/new").text
    r = client.post("/watches/new", data={"csrf": csrf_of(page), "name": "Holiday", "source": "local",
                                          "folder": "/etc", "targets": "outbox", "interval_minutes": "5",
                                          "prompt_template": "Hello {{ file_name }}"})
    assert r.status_code == 422
    assert 'id="folder-error"' in r.text and 'value="/etc"' in r.text and 'value="Holiday"' in r.text
    assert "Hello {{ file_name }}" in r.text
    r = client.post("/watches/new", data={"csrf": csrf_of(page), "name": "Holiday", "source": "local",
                                          "folder": str(photos), "targets": "outbox", "interval_minutes": "5"},
                    follow_redirects=False)
    assert r.status_code == 303
    assert "Holiday" in client.get("/watches").text


def test_watch_form_image_types_one_field(client, ann, photos):
    sign_in(client, ann.email)
    page = client.get("/watches/new").text
    assert 'id="image_types"' in page
    form = {"csrf": csrf_of(page), "name": "Pics", "source": "local", "folder": str(photos), "targets": "outbox",
            "interval_minutes": "5", "image_types": "jpeg, bmp"}
    r = client.post("/watches/new", data=form)
    assert r.status_code == 422 and 'id="image_types-error"' in r.text and "unknown image type" in r.text
    assert 'value="jpeg, bmp"' in r.text
    r = client.post("/watches/new", data={**form, "image_types": "png, JPG"}, follow_redirects=False)
    assert r.status_code == 303
    [w] = client.get("/api/v1/watches", headers=ann.headers).json()
    assert w["image_types"] == ["image/jpeg", "image/png"]
    edit = client.get(f"/watches/{w['id']}/edit").text
    assert 'value="jpeg, png"' in edit
    r = client.post(f"/watches/{w['id']}/edit", data={**form, "csrf": csrf_of(edit), "image_types": ""},
                    follow_redirects=False)
    assert r.status_code == 303
    assert client.get(f"/api/v1/watches/{w['id']}", headers=ann.headers).json()["image_types"] is None


def test_watch_form_fit_defaults_to_pad_and_keeps_a_choice(client, ann, photos):
    sign_in(client, ann.email)
    page = client.get("/watches/new").text
    assert 'name="fit" value="pad" checked' in page
    form = {"csrf": csrf_of(page), "name": "Wide", "source": "local", "folder": str(photos), "targets": "outbox",
            "interval_minutes": "5", "fit": "stretch"}
    r = client.post("/watches/new", data=form)
    assert r.status_code == 422 and 'id="fit-error"' in r.text
    r = client.post("/watches/new", data={**form, "fit": "crop"}, follow_redirects=False)
    assert r.status_code == 303
    [w] = client.get("/api/v1/watches", headers=ann.headers).json()
    assert w["fit"] == "crop"
    assert 'name="fit" value="crop" checked' in client.get(f"/watches/{w['id']}/edit").text


def test_prompt_preview_renders_in_the_sandbox(client, ann):
    sign_in(client, ann.email)
    csrf = csrf_of(client.get("/watches/new").text)
    r = client.post("/watches/preview", data={"csrf": csrf, "prompt_template": "Photo {{ file_stem }} {{ hashtags }}"})
    assert "Photo IMG_0001 #travel #summer" in r.text
    r = client.post("/watches/preview", data={"csrf": csrf, "prompt_template": "{{ 'x' * 10000000 }}"})
    assert "more than 100,000 characters" in r.text and "x" * 1000 not in r.text


@pytest.mark.parametrize("path", ["/posts/{id}", "/watches/{id}/edit"])
def test_another_users_things_are_404(client, ann, bob, bobs_photos, path):
    r = client.post("/api/v1/watches", headers=bob.headers, json={"folder": str(bobs_photos)})
    wid = r.json()["id"]
    sign_in(client, ann.email)
    r = client.get(path.format(id=wid))
    assert r.status_code == 404 and "Not found" in r.text and "<main" in r.text


def test_admin_pages(client, admin, ann):
    sign_in(client, admin.email)
    page = client.get("/admin")
    assert page.status_code == 200 and "Instance" in page.text and ann.email in page.text
    r = client.post("/admin/users", data={"csrf": csrf_of(page.text), "email": "not-an-email", "password": "x",
                                          "display_name": "Zed"})
    assert r.status_code == 422 and 'value="not-an-email"' in r.text and 'value="Zed"' in r.text
    r = client.post("/admin/users", data={"csrf": csrf_of(page.text), "email": "cat@example.com",
                                          "password": "a long enough password 123", "role": "user"})
    assert r.status_code == 200 and "cat@example.com created" in r.text
