"""Fixtures for the Drive adapter: a fresh fake Drive per test and a client pointed at it (no database)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fakes.drive import FakeDrive

from aiposter.sources.google_drive import DriveClient, DriveSettings


@pytest.fixture
def fake():
    f = FakeDrive()
    yield f
    f.close()


def settings_for(fake: FakeDrive, **kw) -> DriveSettings:
    return DriveSettings(api_url=fake.api_url, token_uri=fake.token_uri, revoke_uri=fake.revoke_uri, **kw)


@pytest.fixture
def refreshed():
    """The secrets each token refresh reported (what phase 2 saves encrypted)."""
    return []


@pytest.fixture
def client(fake, refreshed):
    c = DriveClient(fake.issue_tokens(), settings_for(fake, timeout_seconds=5), on_refresh=refreshed.append)
    yield c
    c.close()


class Receiver:
    """A push-notification endpoint: records every POST's headers (names lower-cased, as ASGI gives them)."""

    def __init__(self):
        self.received: list[dict] = []
        self.status = 200
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.received.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(rec.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/drive/push"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
