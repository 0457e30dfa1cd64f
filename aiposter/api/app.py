"""The FastAPI application: routes under /api/v1, probes and metrics at the root."""

from __future__ import annotations

import threading
from contextlib import nullcontext

from fastapi import FastAPI

import aiposter
from aiposter.api import errors
from aiposter.api.routes import auth, connections, me, media, ops, pauses, posts, users, watches
from aiposter.app import App
from aiposter.core.media import urls_for
from aiposter.db import is_sqlite
from aiposter.services.auth import LoginLimiter


def create_app(application: App, daemon=None) -> FastAPI:
    """``daemon``: the scheduler in this process, if any (``/readyz`` and ``/metrics`` report on it)."""
    sec = application.cfg.security
    api = FastAPI(title="ai-poster", version=getattr(aiposter, "__version__", "0"),
                  description="Admin API of ai-poster: accounts, connections, watches, posts, privacy "
                              "and operations. Authenticate with `Authorization: Bearer <token>` from "
                              "`POST /api/v1/auth/login`. Errors are `{\"error\": {\"code\", \"message\", "
                              "\"field\"}}`.")
    api.state.application = application
    api.state.daemon = daemon
    api.state.media_urls = urls_for(application.cfg, application.keyring)  # verifies signed media links
    api.state.db_gate = threading.Lock() if is_sqlite(application.engine) else nullcontext()
    api.state.login_limiter = LoginLimiter(sec.login_max_failures_per_account,
                                           sec.login_max_failures_per_client, sec.login_window_seconds)
    errors.install(api)
    for module in (ops, auth, me, users, connections, watches, posts, pauses, media):
        api.include_router(module.router)
    return api
