"""Structured logs: one line per event; JSON lines when ``log.format = "json"``.

Call sites log a short event name plus fields: ``log.info("post.captioned", extra=fields(post_id=7))``.
Every pipeline line carries ``post_id``.
"""

from __future__ import annotations

import json
import logging
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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        line = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "httpx", "httpcore", "urllib3", "googleapiclient", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
