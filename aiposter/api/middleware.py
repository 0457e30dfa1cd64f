"""ASGI middleware: the request body limit and the security headers every response carries.

Pure ASGI (no BaseHTTPMiddleware) so that a body is never buffered here: a declared ``Content-Length`` over
the limit is refused before a byte of the body is read, and a chunked body is counted as it arrives and cut
off as soon as it passes the limit. Either way the client gets a 413 in the API's error shape.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiposter.api.errors import error_json


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTPException, so FastAPI's body
    parsing lets it through to the error handlers (any other exception there becomes a 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes",
                         headers={"Connection": "close"})


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:
            try:
                size = int(declared[0])
            except ValueError:
                size = -1
            if size < 0 or not declared[0].isdigit():
                await error_json(400, "bad_request", "invalid Content-Length header",
                                 headers={"Connection": "close"})(scope, receive, send)
                return
            if size > self.max_bytes:
                exc = BodyTooLarge(self.max_bytes)
                await error_json(413, "too_large", exc.detail, headers=exc.headers)(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class SecurityHeaders:
    """``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` on every response, and
    ``Cache-Control: no-store`` on everything under /api/ (tokens, profiles, exports, OAuth results are
    private to one user and must not sit in a browser's or a proxy's cache)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not (private and k.lower() == b"cache-control")]
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if private:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


DOCS_CSP = (b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            b"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            b"frame-ancestors 'none'")


class DocsPolicy:
    """A Content-Security-Policy on the docs page: even if a future Swagger UI tried, the browser would
    load scripts, styles, images and requests from this server only."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/docs"):
            await self.app(scope, receive, send)
            return

        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"content-security-policy", DOCS_CSP)]}
            await send(message)

        await self.app(scope, receive, send_with_csp)
