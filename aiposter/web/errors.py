"""Errors on pages: HTML instead of the API's JSON, for the same exceptions.

The API's handlers stay in charge of /api/ (and of everything a script calls); a browser page gets a page.
The OAuth callback is an API route the browser lands on: it gets a page too when the browser asks for HTML.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiposter.services import ServiceError
from aiposter.web.session import SignInNeeded
from aiposter.web.templating import page


def wants_page(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/docs", "/healthz", "/readyz", "/metrics", "/media")):
        return path.endswith("/callback") and "text/html" in request.headers.get("accept", "")
    return True


def install(api: FastAPI) -> None:
    api_service, api_http = api.exception_handlers[ServiceError], api.exception_handlers[StarletteHTTPException]

    def service_error(request: Request, exc: ServiceError):
        if not wants_page(request):
            return api_service(request, exc)
        from aiposter.api.errors import STATUS

        status = next((st for cls, st in STATUS if isinstance(exc, cls)), 400)
        if exc.code == "forbidden" and status == 400:
            status = 403
        return page(request, "error.html", {"status": status, "message": exc.message}, status=status)

    def http_error(request: Request, exc: StarletteHTTPException):
        if not wants_page(request):
            return api_http(request, exc)
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return page(request, "error.html", {"status": exc.status_code, "message": message},
                    status=exc.status_code)

    def sign_in(request: Request, exc: SignInNeeded):
        if request.headers.get("hx-request"):
            return RedirectResponse("/login", status_code=200, headers={"HX-Redirect": "/login"})
        return RedirectResponse(f"/login?next={exc.next_url}", status_code=303)

    api.add_exception_handler(ServiceError, service_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(SignInNeeded, sign_in)
