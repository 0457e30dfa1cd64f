"""Every error leaves the API as ``{"error": {"code", "message", "field"}}`` with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiposter.api.schemas import ErrorResponse
from aiposter.services import Conflict, Invalid, NotFound, ServiceError, Unavailable
from aiposter.services.auth import Forbidden, RateLimited, Unauthorized
from aiposter.services.grants import Expired
from aiposter.services.oauth import OAuthFailed

log = logging.getLogger("aiposter.api")

STATUS = [(NotFound, 404), (Conflict, 409), (Invalid, 422), (Unauthorized, 401), (Forbidden, 403),
          (RateLimited, 429), (OAuthFailed, 400), (Expired, 410),
          (Unavailable, 503)]
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 410: "gone", 413: "too_large", 415: "unsupported_media_type",
              422: "validation_error", 429: "rate_limited", 503: "unavailable"}


def error_json(status: int, code: str, message: str, field: str | None = None,
               headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


def responses(*statuses: int) -> dict:
    """OpenAPI entries for the error statuses a route can return."""
    return {s: {"model": ErrorResponse, "description": HTTP_CODES.get(s, "error")} for s in statuses}


def _service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    status = next((st for cls, st in STATUS if isinstance(exc, cls)), 400)
    code = "validation_error" if isinstance(exc, Invalid) else exc.code
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    return error_json(status, code, exc.message, exc.field, headers)


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    elif first.get("type") == "json_invalid":
        field, message = None, "the request body is not valid JSON"
    return error_json(422, "validation_error", f"{field}: {message}" if field else message, field)


def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, "error")
    return error_json(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette runs a sync handler in a worker thread, outside the ``except`` block that caught ``exc``:
    # log.exception() there would log "NoneType: None". Pass the exception itself.
    log.error("api.error", exc_info=(type(exc), exc, exc.__traceback__),
              extra={"fields": {"path": request.url.path}})
    return error_json(500, "internal_error", "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
