"""Issue 8, findings 5 and 10 (HTTP side): request body limits, security headers, no server banner, a docs page
that loads nothing from another host, access logs without OAuth secrets, and tracebacks of unexpected errors."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time

import pytest
from conftest import make_config
from fastapi.testclient import TestClient

from aiposter.api.app import create_app
from aiposter.api.server import start_server
from aiposter.app import open_app

from .conftest import PASSWORD

ERROR_KEYS = {"code", "message", "field"}


@pytest.fixture
def live(tmp_path, db_url):
    """A served API (real sockets, uvicorn) with a small body limit and the access log on."""
    cfg = make_config(tmp_path, db_url, api={"port": 0, "max_body_bytes": 4096, "access_log": True})
    application = open_app(cfg, migrate=False)
    server = start_server(application)
    yield application, server.port
    server.stop()
    application.close()


def _raw_request(port: int, head: bytes, body_chunks, deadline_s: float = 30.0) -> bytes:
    """Send ``head`` then body chunks from a thread (the server may stop reading), and return what the
    server answers: the status line and headers, read until the blank line or the deadline."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(deadline_s)
    sent = {"bytes": 0}

    def pump():
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                sock.sendall(chunk)
                sent["bytes"] += len(chunk)
        except OSError:
            pass  # the server answered and closed: exactly what is wanted

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except TimeoutError:
        pass
    finally:
        sock.close()
    return data


def _status(raw: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- finding 5: body limits


def test_a_huge_declared_body_is_refused_before_it_is_read(live):
    _, port = live
    declared = 300 * 1024 * 1024
    head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % declared)
    raw = _raw_request(port, head, iter([b'{"email": "' + b"a" * 1000]))  # 1 KB of the 300 MB, then nothing
    assert _status(raw) == 413, raw[:300]
    assert b"connection: close" in raw.lower()


def test_a_chunked_body_is_cut_off_at_the_limit(live):
    _, port = live
    head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 16384
    # 64 MiB offered, never terminated: only a server that stops at the limit can answer at all.
    chunks = (b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4096))
    raw = _raw_request(port, head, chunks)
    assert _status(raw) == 413, raw[:300]


def test_an_oversized_body_gets_the_documented_error_shape(client):
    big = {"email": "ann@example.com", "password": "x" * 300_000}
    r = client.post("/api/v1/auth/login", json=big)
    assert r.status_code == 413
    assert set(r.json()["error"]) == ERROR_KEYS and r.json()["error"]["code"] == "too_large"
    assert str(client.app.state.application.cfg.api.max_body_bytes) in r.json()["error"]["message"]
    # A chunked upload (no Content-Length) is counted as it arrives.
    r = client.post("/api/v1/auth/login", content=iter([b"{" + b" " * 200_000, b" " * 200_000 + b"}"]),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_a_bad_content_length_is_a_400(live):
    _, port = live
    head = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"
    status = _status(_raw_request(port, head, iter([])))
    assert status is not None and 400 <= status < 500


def test_the_largest_legitimate_body_fits_the_default_limit(client, ann, photos):
    # The longest field (a 20,000-character template), non-ASCII and escaped as JSON \uXXXX: 120 KB.
    r = client.post("/api/v1/watches", headers=ann.headers,
                    json={"folder": str(photos), "prompt_template": "\u00e9" * 20_000})
    assert r.status_code == 201, r.text


# --------------------------------------------------------------------------- finding 10: headers, banner, docs


def test_security_headers_and_no_server_banner(live):
    import httpx

    application, port = live
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        r = c.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD})
        assert r.status_code == 401
        assert "server" not in r.headers
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
        h = c.get("/healthz")
        assert h.headers["x-content-type-options"] == "nosniff" and "server" not in h.headers


def test_every_api_response_is_no_store(client, ann):
    for r in (client.get("/api/v1/me", headers=ann.headers), client.get("/api/v1/me"),
              client.post("/api/v1/auth/login", json={"email": ann.email, "password": PASSWORD}),
              client.get("/api/v1/nope")):
        assert r.headers["cache-control"] == "no-store", r.request.url
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_docs_page_loads_nothing_from_another_host(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"""url:\s*["']([^"']+)""",
                                                                                       html)
    assert urls, html
    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
    for u in urls:
        assert u.startswith("/"), u
        assert client.get(u).status_code == 200, u
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/redoc").status_code == 404  # the CDN-loading page is gone, not hidden


# --------------------------------------------------------------------------- finding 10: logs


def test_the_access_log_redacts_oauth_codes_and_states(live, caplog):
    import httpx

    _, port = live
    with caplog.at_level(logging.INFO, logger="uvicorn.access"), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        c.get("/api/v1/connections/facebook/callback",
              params={"code": "SECRETCODE123", "state": "SECRETSTATE456", "other": "kept"})
        deadline = time.monotonic() + 10
        while not any("callback" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    text = " ".join(lines)
    assert "SECRETCODE123" not in text and "SECRETSTATE456" not in text
    assert "code=REDACTED" in text and "other=kept" in text


def test_an_unexpected_error_logs_its_traceback(application, caplog):
    api = create_app(application)

    def boom():
        raise RuntimeError("the real cause")

    api.add_api_route("/boom", boom)
    with caplog.at_level(logging.ERROR, logger="aiposter.api"), TestClient(api, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    [record] = [r for r in caplog.records if r.getMessage() == "api.error"]
    assert record.exc_info and record.exc_info[0] is RuntimeError
    text = logging.Formatter().format(record)
    assert "the real cause" in text and "NoneType: None" not in text
