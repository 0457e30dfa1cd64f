"""Probes and metrics, and the error shape of unknown routes."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from helpers import drain, write_image

from aiposter import db
from aiposter.api.app import create_app
from aiposter.core.daemon import Daemon
from aiposter.core.pipeline import Context

from .seed import seed


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_api_only(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "database": "ok", "scheduler": "not_in_this_process",
                        "pending_migrations": []}


def test_readyz_follows_the_scheduler(application):
    daemon = Daemon(Context(application.cfg, application.engine, owner="ready-test", keyring=application.keyring))
    with TestClient(create_app(application, daemon)) as c:
        assert c.get("/readyz").status_code == 503  # not started yet
        daemon.start()
        try:
            r = c.get("/readyz")
            assert r.status_code == 200 and r.json()["scheduler"] == "running"
        finally:
            daemon.stop(timeout=2)
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["scheduler"] == "stopped" and r.json()["ready"] is False


def test_readyz_reports_a_pending_migration(client, application):
    command.downgrade(db.alembic_config(application.engine), "0001")
    try:
        r = client.get("/readyz")
        later = [rev.revision for rev in ScriptDirectory.from_config(db.alembic_config(application.engine))
                 .walk_revisions() if rev.revision != "0001"]  # newest first, as /readyz lists them
        assert r.status_code == 503 and r.json()["pending_migrations"] == later and "0002" in later
    finally:
        db.migrate(application.engine)


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics(client, application, ann, photos, tmp_path):
    seed(application, ann.email, photos, "m")
    text = client.get("/metrics").text
    assert 'aiposter_posts{state="failed"} 1.0' in text and 'aiposter_posts{state="published"} 0.0' in text
    assert 'aiposter_queue_depth{queue="posts"} 0.0' in text
    for name in ("aiposter_polls_total", "aiposter_files_detected_total", "aiposter_errors_total",
                 "aiposter_llm_latency_seconds", "aiposter_platform_latency_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in text
    ok = _value(text, 'aiposter_polls_total{result="ok"}')
    detected = _value(text, "aiposter_files_detected_total")
    outbox = _value(text, 'aiposter_platform_latency_seconds_count{platform="outbox"}')
    # Run the real pipeline over one new photo: a poll, a file, a caption, a publish.
    ctx = Context(application.cfg, application.engine, owner="metrics-test", keyring=application.keyring)
    drain(ctx)
    write_image(photos, "new.jpg")
    with application.engine.begin() as conn:
        conn.execute(sa.text("UPDATE watch SET next_poll_at = '2000-01-01 00:00:00'"))
    drain(ctx)
    text = client.get("/metrics").text
    assert _value(text, 'aiposter_polls_total{result="ok"}') >= ok + 2
    assert _value(text, "aiposter_files_detected_total") == detected + 1
    assert _value(text, 'aiposter_platform_latency_seconds_count{platform="outbox"}') == outbox + 1
    assert _value(text, 'aiposter_llm_latency_seconds_count{captioner="template"}') >= 1
    # The seeded watch also targets Facebook, whose Graph host is not a Graph server here: a counted error.
    assert any(line.startswith("aiposter_errors_total{") and 'stage="publish"' in line
               and 'platform="facebook"' in line
               and float(line.rsplit(" ", 1)[1]) >= 1 for line in text.splitlines())


def test_unknown_routes_and_methods_use_the_error_shape(client):
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.put("/api/v1/watches")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_the_server_serves_on_a_thread_and_stops(application):
    import httpx

    from aiposter.api.server import start_server

    application.cfg.api.port = 0
    server = start_server(application)
    try:
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").json() == {"status": "ok"}
    finally:
        server.stop()
    assert not server.thread.is_alive()
    assert not any(t.name == "api" and t.is_alive() for t in threading.enumerate())
