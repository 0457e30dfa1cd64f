"""Issue 8, finding 8: odd input is a 4xx in the documented shape, never a 500, and the answers do not reveal
whether a path outside the user's roots exists, or whether another user's connection id exists."""

from __future__ import annotations

import pytest

from aiposter.core.models import Watch
from aiposter.db import session_scope

from .seed import seed


def _is_validation_error(r, field: str) -> None:
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message", "field"}
    assert r.json()["error"]["code"] == "validation_error" and r.json()["error"]["field"] == field


@pytest.mark.parametrize("target", ["facebook:99999999999999999999", "facebook:2147483648", "facebook:0",
                                    "facebook:\u0663", "facebook:-1", "facebook: 1"])
def test_a_target_id_out_of_range_is_a_validation_error(client, ann, photos, target):
    r = client.post("/api/v1/watches", headers=ann.headers, json={"folder": str(photos), "targets": [target]})
    _is_validation_error(r, "targets")


@pytest.mark.parametrize("folder", ["/" + "a" * 4000, "/" + "/".join(["b" * 200] * 19), "/proc/1/root",
                                    "/proc/1/root/etc", "~nosuchuser_x/photos", "/etc", "/nonexistent-dir-x",
                                    "{photos}/../../etc", "{photos}/" + "c" * 300])
def test_odd_folders_are_validation_errors_on_create_and_update(client, ann, photos, folder):
    folder = folder.replace("{photos}", str(photos))
    _is_validation_error(client.post("/api/v1/watches", headers=ann.headers, json={"folder": folder}), "folder")
    w = client.post("/api/v1/watches", headers=ann.headers, json={"folder": str(photos)}).json()
    _is_validation_error(client.patch(f"/api/v1/watches/{w['id']}", headers=ann.headers,
                                      json={"folder": folder}), "folder")


def test_outside_the_roots_existing_and_missing_paths_get_the_same_answer(client, ann, photos, tmp_path):
    (tmp_path / "secret-dir").mkdir()
    (photos / "escape").symlink_to(tmp_path / "secret-dir")
    (photos / "dangling").symlink_to(tmp_path / "no-such-dir")
    answers = {}
    for folder in ("/etc", "/nonexistent-dir-x", str(tmp_path / "secret-dir"), str(tmp_path / "no-such-dir"),
                   "/proc/1/root", str(photos / "escape"), str(photos / "dangling")):
        r = client.post("/api/v1/watches", headers=ann.headers, json={"folder": folder})
        _is_validation_error(r, "folder")
        answers[folder] = r.json()["error"]["message"]
    assert len(set(answers.values())) == 1, answers
    assert not any(folder in message for folder, message in answers.items())


def test_another_users_connection_is_refused_as_a_source_and_says_nothing(client, application, ann, bob, photos,
                                                                          bobs_photos):
    anns = seed(application, ann.email, photos, "annmarker")
    answers = []
    for cid in (anns["connection"], anns["connection"] + 1000):  # someone else's, and one that does not exist
        for source in ("local", "google_drive"):
            r = client.post("/api/v1/watches", headers=bob.headers,
                            json={"folder": str(bobs_photos) if source == "local" else "folder-id", "source": source,
                                  "interval_seconds": 3600, "source_connection_id": cid})
            _is_validation_error(r, "source_connection_id")
            answers.append(r.json()["error"]["message"].replace(str(cid), "ID"))
    assert len(set(answers[0::2])) == 1 and len(set(answers[1::2])) == 1
    bobs_watch = client.post("/api/v1/watches", headers=bob.headers, json={"folder": str(bobs_photos)}).json()
    r = client.patch(f"/api/v1/watches/{bobs_watch['id']}", headers=bob.headers,
                     json={"source_connection_id": anns["connection"]})
    _is_validation_error(r, "source_connection_id")
    with session_scope(application.engine) as s:
        assert s.get(Watch, bobs_watch["id"]).source_connection_id is None


def test_a_local_watch_takes_no_source_connection_even_your_own(client, application, ann, photos):
    anns = seed(application, ann.email, photos, "annmarker")  # a facebook connection of ann's
    r = client.post("/api/v1/watches", headers=ann.headers,
                    json={"folder": str(photos), "source_connection_id": anns["connection"]})
    _is_validation_error(r, "source_connection_id")
