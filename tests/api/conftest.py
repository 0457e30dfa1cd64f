"""API fixtures: a configured app on the parametrized database, a client, users and their tokens."""

from __future__ import annotations

import pytest
from conftest import make_config
from fastapi.testclient import TestClient

from aiposter.api.app import create_app
from aiposter.app import open_app
from aiposter.db import session_scope
from aiposter.services import auth, users

from .fakes import FakeOAuth, oauth_config

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def fake_oauth():
    fake = FakeOAuth()
    yield fake
    fake.close()


@pytest.fixture
def meta_pages(fake_oauth):
    """Call with the Pages the fake Facebook Login should grant in this test (the fake is shared)."""
    saved = fake_oauth.pages

    def grant(*pages):
        fake_oauth.pages = list(pages)

    yield grant
    fake_oauth.pages = saved


@pytest.fixture
def photos(tmp_path):
    """A folder of ann's, under her local root (each user's root is home/<email>)."""
    p = tmp_path / "home" / "ann@example.com" / "photos"
    p.mkdir(parents=True)
    return p


@pytest.fixture
def bobs_photos(tmp_path):
    p = tmp_path / "home" / "bob@example.com" / "photos"
    p.mkdir(parents=True)
    return p


@pytest.fixture
def api_cfg(tmp_path, db_url, photos, fake_oauth, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake token endpoint is plain http
    return make_config(tmp_path, db_url, sources={"local_roots": [str(tmp_path / "home" / "{email}")]},
                       api={"public_url": "https://poster.example"}, oauth=oauth_config(fake_oauth.url))


@pytest.fixture
def application(api_cfg):
    app = open_app(api_cfg, migrate=False)
    yield app
    app.close()


@pytest.fixture
def client(application):
    with TestClient(create_app(application)) as c:
        yield c


class Person:
    """A user with a logged-in token."""

    def __init__(self, client, engine, email: str, role: str = "user"):
        with session_scope(engine) as s:
            self.id = users.create_user(s, email, PASSWORD, role=role).id
        self.email = email
        r = client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.token = r.json()["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def user(self, engine):
        with session_scope(engine) as s:
            return users.get_user_by_email(s, self.email)


@pytest.fixture
def ann(client, application):
    return Person(client, application.engine, "ann@example.com")


@pytest.fixture
def bob(client, application):
    return Person(client, application.engine, "bob@example.com")


@pytest.fixture
def admin(client, application):
    return Person(client, application.engine, "root@example.com", role="admin")


def session_of(engine, token):
    with session_scope(engine) as s:
        return auth.authenticate(s, token)[1]
