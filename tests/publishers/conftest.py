"""Fixtures for the Meta publisher tests: the fake Graph and Threads servers, a stand-in for the
daemon's public media route, prepared JPEGs, and requests that record their checkpoints."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.meta import APP_SECRET, THREADS_APP_SECRET, FakeGraph, FakeThreads, MediaServer
from PIL import Image

from aiposter.publishers.meta.graph import GraphClient, Timeouts
from aiposter.publishers.meta.steps import StepRequest

FAST = Timeouts(connect=2.0, read=2.0)


def jpeg(size=(400, 400), fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 90, 30)).save(buf, fmt)
    return buf.getvalue()


@dataclass
class Recorder:
    """A request whose ``checkpoint`` records each committed handle, as the pipeline would store it."""

    handles: list[dict] = field(default_factory=list)

    def __call__(self, handle: dict) -> None:
        self.handles.append(dict(handle))


def request(*, caption="Fresh sourdough #bakery", alt_text="A loaf of bread on a wooden board",
            media_path: Path | None = None, media_url: str | None = None, handle=None,
            attempt_started_at=None) -> StepRequest:
    return StepRequest(caption=caption, alt_text=alt_text, media_path=media_path, media_url=media_url,
                       handle=handle, attempt_started_at=attempt_started_at or datetime.now(UTC),
                       checkpoint=Recorder())


@pytest.fixture
def graph():
    fake = FakeGraph()
    yield fake
    fake.close()


@pytest.fixture
def threads_fake():
    fake = FakeThreads()
    yield fake
    fake.close()


@pytest.fixture
def media():
    server = MediaServer()
    yield server
    server.close()


@pytest.fixture
def graph_client(graph):
    def make(token: str, *, secret: str | None = APP_SECRET, timeouts=FAST, **kw) -> GraphClient:
        return GraphClient(graph.url, "v21.0", token, app_secret=secret, timeouts=timeouts, **kw)
    return make


@pytest.fixture
def threads_client(threads_fake):
    def make(token: str, *, timeouts=FAST, **kw) -> GraphClient:
        return GraphClient(threads_fake.url, "v1.0", token, app_secret=THREADS_APP_SECRET, who="Threads",
                           timeouts=timeouts, **kw)
    return make


@pytest.fixture
def photo(tmp_path) -> Path:
    p = tmp_path / "prepared.jpg"
    p.write_bytes(jpeg((600, 500)))
    return p
