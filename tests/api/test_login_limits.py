"""Issue 8, finding 6: password guesses are counted in the database before the check, so parallel requests and
replicas cannot exceed the limit; password checks of POST /me/password and DELETE /me are limited too; and a
stranger cannot lock the owner out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import make_config
from fastapi.testclient import TestClient

from aiposter.api.app import create_app
from aiposter.api.server import start_server
from aiposter.app import open_app
from aiposter.db import session_scope
from aiposter.services import users
from aiposter.services.limits import client_key

from .conftest import PASSWORD


@pytest.fixture
def replicas(tmp_path, db_url):
    """Two API servers (replicas) on one database, each with its own process state."""
    cfg = make_config(tmp_path, db_url, api={"port": 0, "access_log": False})
    apps = [open_app(cfg, migrate=False) for _ in range(2)]
    with session_scope(apps[0].engine) as s:
        users.create_user(s, "ann@example.com", PASSWORD)
    servers = [start_server(a) for a in apps]
    yield cfg, [f"http://127.0.0.1:{srv.port}" for srv in servers]
    for srv in servers:
        srv.stop()
    for a in apps:
        a.close()


def _login(url: str, password: str) -> int:
    with httpx.Client(base_url=url, timeout=120) as c:
        return c.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": password}).status_code


def test_parallel_guesses_on_two_replicas_do_not_exceed_the_limit(replicas):
    cfg, urls = replicas
    limit = cfg.security.login_max_failures_per_account
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda i: _login(urls[i % 2], f"wrong guess number {i}"), range(40)))
    assert statuses.count(401) <= limit and set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) >= 1
    # The limit holds for the right password too, on either replica.
    assert _login(urls[0], PASSWORD) == 429 and _login(urls[1], PASSWORD) == 429


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/api/v1/me/password", lambda pw: {"current_password": pw, "new_password": "a much longer secret"}),
    ("DELETE", "/api/v1/me", lambda pw: {"password": pw}),
])
def test_password_checks_of_a_logged_in_user_are_limited(client, application, ann, method, path, body):
    limit = application.cfg.security.login_max_failures_per_account
    for i in range(limit):
        r = client.request(method, path, headers=ann.headers, json=body(f"not the password {i}"))
        assert r.status_code == 403, r.text
    r = client.request(method, path, headers=ann.headers, json=body("still not the password"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    r = client.request(method, path, headers=ann.headers, json=body(PASSWORD))  # even the right one waits
    assert r.status_code == 429
    assert client.get("/api/v1/me", headers=ann.headers).status_code == 200


def test_a_stranger_cannot_lock_the_owner_out(tmp_path, db_url):
    cfg = make_config(tmp_path, db_url, security={"login_max_failures_per_account": 3,
                                                  "login_max_failures_per_account_total": 6})
    application = open_app(cfg, migrate=False)
    api = create_app(application)
    with session_scope(application.engine) as s:
        users.create_user(s, "ann@example.com", PASSWORD)

    def browser(address):
        return TestClient(api, client=(address, 40000))

    def login(c, password):
        return c.post("/api/v1/auth/login", json={"email": "ann@example.com", "password": password}).status_code

    try:
        with browser("192.0.2.10") as home, browser("198.51.100.7") as stranger, \
                browser("203.0.113.1") as other1, browser("203.0.113.2") as other2, browser("203.0.113.3") as new:
            assert login(home, PASSWORD) == 200  # the owner's usual address
            assert [login(stranger, f"guess {i}") for i in range(4)] == [401, 401, 401, 429]
            assert login(stranger, PASSWORD) == 429  # the stranger's allowance on this account is spent
            assert login(home, PASSWORD) == 200  # ... and only theirs
            for c in (other1, other2):  # a distributed guess reaches the account-wide limit
                for i in range(3):
                    login(c, f"guess {i}")
            assert login(new, PASSWORD) == 429  # an address never used by the owner now waits
            assert login(home, PASSWORD) == 200  # the owner's known address does not
    finally:
        application.close()


def test_one_ipv6_subscriber_is_one_client():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1" and client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("testclient") == "testclient"
