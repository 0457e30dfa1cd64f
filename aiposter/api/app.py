"""The FastAPI application: routes under /api/v1, probes and metrics at the root."""

from __future__ import annotations

import threading
from contextlib import nullcontext

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import aiposter
from aiposter.api import errors
from aiposter.api.middleware import BodyLimit, DocsPolicy, SecurityHeaders
from aiposter.api.routes import (
    audit,
    auth,
    connections,
    drive,
    me,
    media,
    notify,
    ops,
    pauses,
    posts,
    users,
    watches,
)
from aiposter.app import App
from aiposter.core.media import urls_for
from aiposter.db import is_sqlite
from aiposter.services.limits import LoginLimiter


def create_app(application: App, daemon=None) -> FastAPI:
    """``daemon``: the scheduler in this process, if any (``/readyz`` and ``/metrics`` report on it)."""
    sec = application.cfg.security
    # FastAPIOffline serves Swagger UI's files from its own package: a user's browser opening /docs never
    # calls a third-party host. ReDoc is not served.
    api = FastAPIOffline(title="ai-poster", version=getattr(aiposter, "__version__", "0"),
                         docs_url="/docs", redoc_url=None, static_url="/docs/assets",
                         swagger_ui_parameters={"validatorUrl": None},
                         description="Admin API of ai-poster: accounts, connections, watches, posts, privacy "
                                     "and operations. Authenticate with `Authorization: Bearer <token>` from "
                                     "`POST /api/v1/auth/login`. Errors are `{\"error\": {\"code\", "
                                     "\"message\", \"field\"}}`.")
    api.state.application = application
    api.state.daemon = daemon
    api.state.media_urls = urls_for(application.cfg, application.keyring)  # verifies signed media links
    api.state.db_gate = threading.Lock() if is_sqlite(application.engine) else nullcontext()
    api.state.login_limiter = LoginLimiter(sec.login_max_failures_per_account, sec.login_max_failures_per_client,
                                           sec.login_window_seconds, sec.login_max_failures_per_account_total)
    errors.install(api)
    api.add_middleware(SecurityHeaders)
    api.add_middleware(BodyLimit, max_bytes=application.cfg.api.max_body_bytes)  # outermost: before anything
    api.add_middleware(DocsPolicy)
    # The media route first: Meta's fetchers call it for every Instagram and Threads container, and routes
    # are matched in order (last, it was tried against every API route first: route matching was ~4 % of the
    # publishing CPU profile).
    for module in (media, ops, auth, me, users, connections, watches, posts, pauses, audit, notify, drive):
        api.include_router(module.router)
    from aiposter import web

    web.install(api)  # the web interface: pages beside the API, on the same services
    return api
