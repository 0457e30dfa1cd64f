"""Structured logs: one line per event; JSON lines when ``log.format = "json"``.

Call sites log a short event name plus fields: ``log.info("post.captioned", extra=fields(post_id=7))``.
Every pipeline line carries ``post_id``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Record attributes that are not event fields (uvicorn adds an ANSI-coloured copy of its message).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}


def fields(**kw) -> dict:
    return {"fields": {k: v for k, v in kw.items() if v is not None}}


def _extra(record: logging.LogRecord) -> dict:
    out = dict(getattr(record, "fields", {}) or {})
    for k, v in vars(record).items():
        if k not in _STANDARD and k != "fields":
            out[k] = v
    return out


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extra(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


_BARE = re.compile(r"[\w.:/@+,#%-]+")  # values printed as they are; anything else is quoted


def _escape_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch == '"':
        return '\\"'
    if ch.isprintable():
        return ch
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
        f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")


def _unprintable_escaped(text: str) -> str:
    """Every character that could end or fake a line (newlines, U+2028, control characters) as an escape."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def text_value(value) -> str:
    """A field value for the text format: bare when it is a plain token, else double-quoted with escapes,
    so a value (a file name, an error from a server) can never start a line of its own or fake a field."""
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return '"' + "".join(_escape_char(ch) for ch in text) + '"'


class TextFormatter(logging.Formatter):
    """``TIME LEVEL event key=value ...``: one line per event. Values are escaped (see :func:`text_value`);
    a traceback follows on lines indented by four spaces, so that only real events start a line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        extra = " ".join(f"{_unprintable_escaped(str(k))}={text_value(v)}" for k, v in _extra(record).items())
        message = _unprintable_escaped(record.getMessage())
        line = f"{ts} {record.levelname:<7} {message}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + "\n".join("    " + _unprintable_escaped(part)
                                     for part in self.formatException(record.exc_info).split("\n"))
        return line


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "httpx", "httpcore", "urllib3", "googleapiclient", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
