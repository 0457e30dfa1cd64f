"""Schemathesis against the live OpenAPI spec of a served API: no 5xx, no hang, every response as documented.

Every operation is fuzzed twice: as an admin and as a plain user (who owns seeded data too). Bounded: SQLite
only, a few examples per operation, no deadline, a timeout on each call. Each case carries a fresh token, so
routes that log out or change state do not starve the cases after them.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
import schemathesis
from conftest import make_config
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import select

from aiposter.api.server import start_server
from aiposter.app import open_app
from aiposter.core.models import AuthSession, User, utcnow
from aiposter.db import session_scope
from aiposter.services import users
from aiposter.services.auth import hash_token

from .conftest import PASSWORD
from .seed import seed


@pytest.fixture(scope="module")
def live(tmp_path_factory, _sqlite_template):
    import shutil

    tmp = tmp_path_factory.mktemp("schema")
    shutil.copyfile(_sqlite_template, tmp / "aiposter.db")
    (tmp / "photos").mkdir()
    cfg = make_config(tmp, f"sqlite:///{tmp / 'aiposter.db'}",
                      sources={"local_roots": [str(tmp / "home" / "{user_id}")]}, api={"port": 0, "access_log": False},
                      notify={"timeout_seconds": 1})  # a fuzzed notification URL costs a second at most
    application = open_app(cfg, migrate=False)
    with session_scope(application.engine) as s:
        admin_id = users.create_user(s, "root@example.com", PASSWORD, role="admin").id
        users.create_user(s, "ann@example.com", PASSWORD)
    seed(application, "root@example.com", tmp / "photos", "a")
    seed(application, "ann@example.com", tmp / "photos", "b")
    server = start_server(application)
    yield application, admin_id, f"http://127.0.0.1:{server.port}"
    server.stop()
    application.close()


def fresh_token(application, email: str, role: str = "user") -> str:
    """A new token for the user, recreated if a fuzzed case deleted or disabled them."""
    token = secrets.token_urlsafe(32)
    with session_scope(application.engine) as s:
        user = s.exec(select(User).where(User.email == email)).first()
        if user is None:
            user = users.create_user(s, email, PASSWORD, role=role)
        user.disabled = False
        s.add(AuthSession(user_id=user.id, token_hash=hash_token(token), expires_at=utcnow() + timedelta(hours=1)))
    return token


def test_api_conforms_to_its_schema(live):
    # Driven through Hypothesis directly: schemathesis' pytest plugin does not support pytest 9 yet.
    application, _, base_url = live
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    statuses: list[int] = []

    for operation in operations:
        for email, role in (("root@example.com", "admin"), ("ann@example.com", "user")):
            @given(case=operation.as_strategy())
            @settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case):
                headers = {"Authorization": f"Bearer {fresh_token(application, email, role)}"}  # noqa: B023
                # A hang is a failure too: every call must answer within the timeout.
                response = case.call_and_validate(base_url=base_url, headers=headers, checks=checks, timeout=30)
                statuses.append(response.status_code)

            try:
                run()
            except Exception as exc:
                raise AssertionError(f"{operation.method.upper()} {operation.path} as {role}: {exc}") from exc
    assert len(statuses) >= 200 and {200, 403, 404, 422} <= set(statuses)  # it really exercised the API
