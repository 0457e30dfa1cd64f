"""Web fixtures: the API's app (which mounts the pages) and a signed-in browser-like client."""

from __future__ import annotations

import re

from api.conftest import (  # noqa: F401 - fixtures shared with the API tests
    PASSWORD,
    Person,
    admin,
    ann,
    api_cfg,
    application,
    bob,
    bobs_photos,
    client,
    fake_oauth,
    meta_pages,
    photos,
)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(http, email: str, password: str = PASSWORD):
    r = http.get("/login")
    r = http.post("/login", data={"email": email, "password": password, "csrf": csrf_of(r.text), "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return r
