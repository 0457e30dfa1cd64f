"""Every Drive or Google OAuth failure as a :class:`SourceError` with a code from the shared vocabulary.

Transient (retry later, the whole connection backs off): ``timeout``, ``connection``, ``server_error``,
``rate_limited`` (403 ``userRateLimitExceeded``/``rateLimitExceeded``, 429; ``retry_after`` from the
``Retry-After`` header when Google sends one). ``quota``: a daily limit used up. ``auth``: the refresh token
was refused (``invalid_grant``) or the token lacks the Drive scope: the connection needs the user.
``config``: the OAuth client or the Drive API is misconfigured install-wide. ``resync``: the stored page
token was rejected; the caller restarts the feed from a fresh token and a listing. Anything else is about
one file or folder and permanent: ``not_found``, ``forbidden``, ``not_downloadable``, ``bad_request``.

Until the shared classifier (``aiposter/core/faults.py``) lands, this module maps HTTP errors itself.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httplib2
from google.auth import exceptions as gauth_errors
from googleapiclient.errors import HttpError

from aiposter.core.errors import SourceError

RATE_REASONS = {"userRateLimitExceeded", "rateLimitExceeded", "sharingRateLimitExceeded"}
QUOTA_REASONS = {"dailyLimitExceeded", "quotaExceeded", "dailyLimitExceededUnreg"}


class ResyncNeeded(SourceError):
    """Drive rejected the stored page token: start over from a fresh token plus a listing."""

    def __init__(self, message: str = "Google Drive rejected the stored change token; a resync is needed"):
        super().__init__(message, permanent=False, code="resync")


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (both forms are legal)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _details(err: HttpError) -> tuple[str, str, str]:
    """(reason, message, location) from Google's envelope; tolerant of HTML or empty bodies."""
    try:
        body = json.loads(err.content.decode("utf-8", "replace")) if err.content else {}
    except ValueError:
        body = {}
    e = body.get("error") if isinstance(body, dict) else None
    if not isinstance(e, dict):
        return "", "", ""
    first = (e.get("errors") or [{}])[0] if isinstance(e.get("errors"), list) else {}
    first = first if isinstance(first, dict) else {}
    return (str(first.get("reason") or e.get("status") or ""), str(e.get("message") or first.get("message") or ""),
            str(first.get("location") or ""))


def from_http_error(err: HttpError, what: str) -> SourceError:
    status = int(err.resp.status)
    reason, message, location = _details(err)
    retry_after = retry_after_seconds(err.resp.get("retry-after"))
    said = f"{message or reason or 'HTTP ' + str(status)}"[:300]
    if status == 400 and location == "pageToken":
        return ResyncNeeded()
    if status == 429 or (status == 403 and reason in RATE_REASONS):
        return SourceError(f"Google Drive is rate limiting this account ({what}): {said}", retry_after=retry_after,
                           code="rate_limited")
    if status == 403 and reason in QUOTA_REASONS:
        return SourceError(f"Google Drive's daily quota is used up ({what}): {said}", retry_after=retry_after,
                           code="quota")
    if status >= 500:
        return SourceError(f"Google Drive failed ({what}): HTTP {status} {said}", retry_after=retry_after,
                           code="server_error")
    if status == 401:
        return SourceError(f"Google Drive refused the access token ({what}) even after a refresh: {said}; "
                           "reconnect the Drive account", permanent=True, code="auth")
    if status == 403 and reason in ("insufficientPermissions", "insufficientScopes"):
        return SourceError("this Drive connection was not granted read access to files (drive.readonly); "
                           "reconnect it and allow access", permanent=True, code="auth")
    if status == 403 and reason in ("accessNotConfigured", "SERVICE_DISABLED"):
        return SourceError(f"the Google Drive API is not enabled for this OAuth client's project: {said}",
                           permanent=True, code="config")
    if status == 403 and reason == "fileNotDownloadable":
        return SourceError(f"{what}: a Google Docs/Sheets/... file has no image content to download",
                           permanent=True, code="not_downloadable")
    if status == 403 and reason == "cannotDownloadAbusiveFile":
        return SourceError(f"{what}: Google flagged this file as malware or spam and refuses to serve it",
                           permanent=True, code="refused")
    if status == 404:
        return SourceError(f"{what}: not found, or this Google account can no longer see it", permanent=True,
                           code="not_found")
    if status == 403:
        return SourceError(f"{what}: Google Drive refused access ({said})", permanent=True, code="forbidden")
    return SourceError(f"{what}: Google Drive refused the request: HTTP {status} {said}", permanent=True,
                       code="bad_request")


def from_refresh_error(err: gauth_errors.RefreshError) -> SourceError:
    text = str(err.args[0]) if err.args else str(err)  # args[1] is the decoded response body, if any
    if getattr(err, "retryable", False):
        return SourceError(f"Google's token endpoint failed: {text[:200]}", code="server_error")
    if text.startswith(("invalid_client", "unauthorized_client")):
        return SourceError(f"Google refused this server's OAuth client ({text[:200]}); check [oauth.google] "
                           "client_id and client_secret", permanent=True, code="config")
    return SourceError(f"Google refused the Drive refresh token ({text[:200]}); reconnect the Drive account",
                       permanent=True, code="auth")


def from_exception(exc: BaseException, what: str) -> SourceError:
    """Map anything a Drive call can raise; SourceErrors pass through."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, HttpError):
        return from_http_error(exc, what)
    if isinstance(exc, gauth_errors.RefreshError):
        return from_refresh_error(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return SourceError(f"Google Drive did not answer in time ({what})", code="timeout")
    if isinstance(exc, gauth_errors.TransportError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, TimeoutError | socket.timeout):
            return SourceError(f"Google's token endpoint did not answer in time ({what})", code="timeout")
        return SourceError(f"cannot reach Google's token endpoint ({what}): {str(exc)[:200]}", code="connection")
    if isinstance(exc, ValueError):  # a body the client library could not decode
        return SourceError(f"Google Drive sent an answer that cannot be read ({what}): {str(exc)[:200]}",
                           code="server_error")
    if isinstance(exc, httplib2.HttpLib2Error | OSError):
        return SourceError(f"cannot reach Google Drive ({what}): {str(exc)[:200] or type(exc).__name__}",
                           code="connection")
    raise exc
