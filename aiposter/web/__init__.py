"""The web interface: server-rendered pages (Jinja2 + htmx) for the people who use ai-poster.

Mounted in the admin API's FastAPI app by :func:`install`. Every page calls the services layer, like the
API routes do, and maps the same :class:`~aiposter.services.ServiceError` subclasses to pages and form
errors. Signed-in browsers hold an HttpOnly session cookie whose value is an ordinary session token (the
database keeps only its hash, like a bearer token's); forms carry a CSRF token derived from it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(api: FastAPI) -> None:
    """Add the pages, the static files and the HTML error pages to the API's app."""
    from aiposter.web import errors, grants, picker, review, routes

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.include_router(picker.router)  # /watches/folders before /watches/{id}
    api.include_router(review.router)
    api.include_router(routes.router)
    api.include_router(grants.router)
    errors.install(api)
