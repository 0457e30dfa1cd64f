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
