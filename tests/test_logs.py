"""Structured logs: one line per event; JSON lines carry the event's fields (post_id in pipeline lines)."""

from __future__ import annotations

import io
import json
import logging

from helpers import drain, write_image
from test_pipeline import add_watch, make_due

from aiposter import logs


def capture(fmt: str) -> io.StringIO:
    logs.setup("INFO", fmt)
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)
    return stream


def test_json_lines_carry_post_id(ctx, tmp_path):
    stream = capture("json")
    try:
        wid = add_watch(ctx, tmp_path / "in")
        drain(ctx)
        write_image(tmp_path / "in", "a.jpg")
        make_due(ctx, wid)
        drain(ctx)
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = {line["msg"]: line for line in lines}
    for event in ("post.detected", "post.downloaded", "post.captioned", "target.published", "post.finished"):
        assert events[event]["post_id"] == 1, event
        assert events[event]["level"] == "info" and events[event]["ts"].endswith("+00:00")
    assert all("post_id" in line for line in lines if line["msg"].startswith(("post.", "target.")))


def test_text_lines_are_key_value():
    stream = capture("text")
    try:
        logging.getLogger("aiposter.pipeline").warning("post.failed", extra=logs.fields(post_id=7, step="x"))
    finally:
        logging.getLogger().handlers.clear()
    [line] = stream.getvalue().splitlines()
    assert line.endswith("WARNING post.failed post_id=7 step=x")


FORGED = "a.jpg\n2025-01-01T00:00:00 INFO    post.finished post_id=99 status=published"


def test_text_values_cannot_forge_lines_or_fields():
    """A file name (anyone who can drop a file chooses it) with a newline must not write a fake event."""
    stream = capture("text")
    try:
        log = logging.getLogger("aiposter.pipeline")
        log.info("post.detected", extra=logs.fields(post_id=1, file=FORGED, folder="My Photos",
                                                    note='say "hi" x=1\\', sep="a\u2028b\x1b[2J"))
        log.info("post.failed\nfake.line", extra=logs.fields(post_id=2))
        try:
            raise ValueError("bad image\n2025-01-01T00:00:00 INFO    post.finished post_id=98")
        except ValueError:
            log.exception("post.step_crashed", extra=logs.fields(post_id=3))
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().split("\n")
    events = [line for line in lines if line and not line.startswith(" ")]
    assert len(events) == 3, lines  # every other line is an indented traceback line
    assert [e.split()[2] for e in events] == ["post.detected", "post.failed\\nfake.line", "post.step_crashed"]
    first = events[0]
    assert 'file="a.jpg\\n2025-01-01T00:00:00 INFO    post.finished post_id=99 status=published"' in first
    assert 'folder="My Photos"' in first and 'note="say \\"hi\\" x=1\\\\"' in first
    assert 'sep="a\\u2028b\\x1b[2J"' in first
    assert "post_id=1 " in first  # plain tokens stay bare
    assert not any(e.startswith("2025-01-01") for e in lines)
    assert len(stream.getvalue().splitlines()) == len(lines) - 1  # no U+2028 or other line break left
