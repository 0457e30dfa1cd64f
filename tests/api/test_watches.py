"""Watches through the API: create, read, update, pause, resume, poll now, delete; errors name the field."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from aiposter.core.models import Watch, utcnow
from aiposter.db import session_scope


def test_watch_lifecycle(client, application, ann, photos):
    r = client.post("/api/v1/watches", headers=ann.headers,
                    json={"folder": str(photos), "interval_seconds": 60, "prompt_template": "{{ file_stem }}"})
    assert r.status_code == 201, r.text
    w = r.json()
    assert (w["folder_name"], w["interval_seconds"], w["targets"], w["enabled"]) == ("photos", 60, ["outbox"], True)
    wid = w["id"]
    assert client.get(f"/api/v1/watches/{wid}", headers=ann.headers).json() == w
    r = client.patch(f"/api/v1/watches/{wid}", headers=ann.headers, json={"name": "Holiday", "backfill": True})
    assert (r.json()["name"], r.json()["backfill"], r.json()["interval_seconds"]) == ("Holiday", True, 60)
    assert client.post(f"/api/v1/watches/{wid}/pause", headers=ann.headers).json()["enabled"] is False
    assert client.post(f"/api/v1/watches/{wid}/resume", headers=ann.headers).json()["enabled"] is True
    with session_scope(application.engine) as s:
        s.execute(sa.update(Watch).values(next_poll_at=utcnow().replace(year=2100)))
    before = utcnow()
    client.post(f"/api/v1/watches/{wid}/poll", headers=ann.headers)
    with session_scope(application.engine) as s:
        assert s.get(Watch, wid).next_poll_at <= utcnow() and s.get(Watch, wid).next_poll_at >= before
    assert [x["id"] for x in client.get("/api/v1/watches", headers=ann.headers).json()] == [wid]
    assert client.delete(f"/api/v1/watches/{wid}", headers=ann.headers).status_code == 200
    assert client.get(f"/api/v1/watches/{wid}", headers=ann.headers).status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({}, "folder"),
    ({"folder": "/etc"}, "folder"),
    ({"folder": "{photos}/missing"}, "folder"),
    ({"folder": "{photos}", "interval_seconds": 1}, "interval_seconds"),
    ({"folder": "{photos}", "targets": ["myspace"]}, "targets"),
    ({"folder": "{photos}", "targets": ["instagram"]}, "targets"),
    ({"folder": "{photos}", "captioner": "nope"}, "captioner"),
    ({"folder": "{photos}", "prompt_template": "{% if %}"}, "prompt_template"),
    ({"folder": "abc", "source": "google_drive", "interval_seconds": 3600}, "source_connection_id"),
    ({"folder": "{photos}", "maximum_age_hours": -1}, "maximum_age_hours"),
    ({"folder": "{photos}", "colour": "blue"}, "colour"),
])
def test_validation_errors_name_the_field(client, ann, photos, body, field):
    body = {k: v.replace("{photos}", str(photos)) if isinstance(v, str) else v for k, v in body.items()}
    r = client.post("/api/v1/watches", headers=ann.headers, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["field"] == field and err["message"]


def test_invalid_json_is_a_validation_error(client, ann):
    r = client.post("/api/v1/watches", headers={**ann.headers, "Content-Type": "application/json"},
                    content=b"{not json")
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
