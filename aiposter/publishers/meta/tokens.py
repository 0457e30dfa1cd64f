"""Keeping Meta tokens alive, as plain functions for the credentials refresher (housekeeping).

* Threads long-lived tokens last 60 days and can be refreshed once they are a day old
  (``GET /refresh_access_token?grant_type=th_refresh_token``); each refresh restarts the 60 days.
  :func:`threads_refresh_state` says when; :func:`refresh_threads_token` does it.
* Facebook Page tokens derived from a long-lived user token do not expire, but are invalidated by a
  password change, a removed app or a lost Page role. :func:`debug_token` asks Graph (with the app
  token ``app_id|app_secret``) and :func:`page_token_problem` turns the answer into a reason or None.

Errors are :class:`~aiposter.core.errors.PublishError` with the shared codes; ``auth`` means the
connection needs the user to reconnect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from aiposter.core.errors import PublishError
from aiposter.publishers.meta.graph import GraphClient, Timeouts
from aiposter.publishers.meta.steps import utcnow

THREADS_LIFETIME = timedelta(days=60)
THREADS_MIN_AGE = timedelta(days=1)
PAGE_PUBLISH_SCOPES = ("pages_manage_posts", "pages_read_engagement", "pages_show_list")
IG_PUBLISH_SCOPES = ("instagram_basic", "instagram_content_publish")


@dataclass
class RefreshedToken:
    access_token: str
    expires_at: datetime | None


def threads_refresh_state(expires_at: datetime | None, *, now: datetime | None = None,
                          refreshed_at: datetime | None = None, min_age: timedelta = THREADS_MIN_AGE,
                          lifetime: timedelta = THREADS_LIFETIME) -> str:
    """``"expired"`` (dead: reconnect), ``"refresh"`` (a day old or more: refresh now) or ``"ok"``.

    Refreshing as soon as Meta allows keeps a token near its full 60 days, so a week of failed
    refreshes (outage, bad config) still leaves weeks of margin. The age comes from ``refreshed_at``
    when known, else from ``expires_at`` minus the 60-day lifetime.
    """
    now = now or utcnow()
    if expires_at is None:
        return "refresh" if refreshed_at is None or now - refreshed_at >= min_age else "ok"
    expires_at = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if expires_at <= now:
        return "expired"
    issued = refreshed_at or (expires_at - lifetime)
    return "refresh" if now - issued >= min_age else "ok"


def refresh_threads_token(base_url: str, access_token: str, *, app_secret: str | None = None,
                          http: httpx.Client | None = None, timeouts: Timeouts | None = None,
                          now: datetime | None = None) -> RefreshedToken:
    """A fresh 60-day token. 190 (expired/revoked) comes back as ``auth``: the user must reconnect."""
    with GraphClient(base_url, "", access_token, app_secret=app_secret, who="Threads", http=http,
                     timeouts=timeouts) as client:
        body = client.get("refresh_access_token", {"grant_type": "th_refresh_token"}, versioned=False)
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise PublishError("Threads refreshed the token but sent none back", code="server_error")
    expires_in = body.get("expires_in")
    expires = (now or utcnow()) + timedelta(seconds=int(expires_in)) if expires_in else None
    return RefreshedToken(token, expires)


@dataclass
class TokenInfo:
    is_valid: bool
    type: str = ""                   # USER, PAGE, APP, ...
    app_id: str = ""
    user_id: str = ""
    profile_id: str = ""             # the Page, for a Page token
    scopes: list[str] = field(default_factory=list)
    expires_at: datetime | None = None   # None: never expires
    error: str = ""


def debug_token(base_url: str, version: str, app_id: str, app_secret: str, input_token: str, *,
                http: httpx.Client | None = None, timeouts: Timeouts | None = None) -> TokenInfo:
    """Graph's ``debug_token`` for ``input_token``, asked with the app token."""
    with GraphClient(base_url, version, f"{app_id}|{app_secret}", app_secret=app_secret, http=http,
                     timeouts=timeouts) as client:
        data = client.get("debug_token", {"input_token": input_token}).get("data") or {}
    err = data.get("error") if isinstance(data.get("error"), dict) else {}
    exp = int(data.get("expires_at") or 0)
    return TokenInfo(
        is_valid=bool(data.get("is_valid")), type=str(data.get("type") or ""), app_id=str(data.get("app_id") or ""),
        user_id=str(data.get("user_id") or ""), profile_id=str(data.get("profile_id") or ""),
        scopes=[str(s) for s in data.get("scopes") or []],
        expires_at=datetime.fromtimestamp(exp, UTC) if exp else None,
        error=str(err.get("message") or ""))


def page_token_problem(info: TokenInfo, *, page_id: str | None = None, app_id: str | None = None,
                       required: tuple[str, ...] = PAGE_PUBLISH_SCOPES, now: datetime | None = None) -> str | None:
    """Why this token cannot publish to the Page, or None. The text is shown on the connection."""
    if not info.is_valid:
        return f"the token is no longer valid: {info.error or 'revoked or expired'}; reconnect"
    if app_id and info.app_id and info.app_id != app_id:
        return f"the token belongs to another Meta app ({info.app_id})"
    if info.type and info.type != "PAGE":
        return f"this is a {info.type} token, not a Page token"
    if page_id and info.profile_id and info.profile_id != page_id:
        return f"the token is for Page {info.profile_id}, not {page_id}"
    missing = [s for s in required if s not in info.scopes]
    if missing:
        return f"permission not granted: {', '.join(missing)}; reconnect and allow it"
    if info.expires_at and info.expires_at <= (now or utcnow()) + timedelta(days=7):
        return (f"the token expires on {info.expires_at:%Y-%m-%d}: it was made from a short-lived login; "
                "reconnect to get a Page token that does not expire")
    return None
