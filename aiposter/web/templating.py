"""Jinja2 for pages (autoescaped, from the package's templates) and the filters they use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

import aiposter

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

PROVIDER_NAMES = {"google_drive": "Google Drive", "facebook": "Facebook Page", "instagram": "Instagram",
                  "threads": "Threads", "outbox": "Outbox (files on the server)", "local": "Folder on the server"}


def when(value) -> str:
    """A time as people read it: UTC, to the minute; '' for none."""
    if not value:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def interval(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


templates.env.filters["when"] = when
templates.env.filters["interval"] = interval
templates.env.globals["provider_name"] = lambda p: PROVIDER_NAMES.get(p, p)
templates.env.globals["version"] = getattr(aiposter, "__version__", "0")


# Scripts, styles, images and requests from this server only; no eval (htmx runs with allowEval off). No
# form-action: connecting an account posts a form that redirects to the provider's consent page.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def page(request: Request, name: str, context: dict | None = None, status: int = 200, headers=None):
    """A rendered page: private to the signed-in user (never cached) and under :data:`CSP`."""
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": CSP, **(headers or {})}
    browser = getattr(request.state, "browser", None)
    ctx = {"browser": browser, "user": browser.user if browser else None,
           "viewer": browser.viewer if browser else None,
           "csrf": browser.csrf if browser else "", **(context or {})}
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=headers)
