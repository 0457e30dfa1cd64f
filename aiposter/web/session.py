"""Browser sessions: the cookie, the signed-in user, and CSRF tokens.

The cookie holds a token from :func:`aiposter.services.auth.login`, so it is the same kind of session row as
a bearer token: it expires, signing out revokes it, a password change ends the others, disabling the
account stops it. HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site form posts), Secure
when the request came over https.

CSRF: every state-changing form posts ``csrf``, and htmx requests send ``X-CSRF-Token``. Signed in, the
token is an HMAC of the session token (nothing to store; it changes with the session). Before signing in,
the login form uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from aiposter.api.deps import DB
from aiposter.core.models import AuthSession, User
from aiposter.services import ServiceError, auth

COOKIE = "aiposter_session"
LOGIN_CSRF_COOKIE = "aiposter_login_csrf"


class SignInNeeded(Exception):
    """A page that needs a signed-in user was opened without one: the browser goes to the sign-in page."""

    def __init__(self, next_url: str = "/"):
        self.next_url = next_url


class CsrfFailed(ServiceError):
    code = "forbidden"


def csrf_for(token: str) -> str:
    return hmac.new(b"aiposter-web-csrf", token.encode(), hashlib.sha256).hexdigest()


@dataclass
class Browser:
    user: User
    session: AuthSession
    csrf: str

    def __post_init__(self):
        # What the page frame shows, copied now: an error page renders after the request's unit of work
        # has ended, when the ORM rows can no longer be read.
        self.viewer = {"id": self.user.id, "email": self.user.email, "role": self.user.role}


def _browser(request: Request, s: DB) -> Browser:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded(request.url.path)
    try:
        user, session = auth.authenticate(s, token)
    except auth.Unauthorized:
        raise SignInNeeded(request.url.path) from None
    browser = Browser(user, session, csrf_for(token))
    request.state.browser = browser
    return browser


async def _form_csrf(request: Request) -> str:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    form = await request.form()
    return str(form.get("csrf") or "")


async def _checked(request: Request, browser: Annotated[Browser, Depends(_browser)]) -> Browser:
    """The signed-in browser of a state-changing request whose CSRF token matches its session."""
    sent = await _form_csrf(request)
    if not hmac.compare_digest(sent, browser.csrf):
        raise CsrfFailed("this form has expired (its security token does not match); reload the page and "
                         "try again")
    return browser


async def check_login_csrf(request: Request) -> None:
    sent = await _form_csrf(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not cookie or not hmac.compare_digest(sent, cookie):
        raise CsrfFailed("this sign-in form has expired; reload the page and try again")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response, request: Request, name: str, value: str, max_age: int | None = None,
               path: str = "/") -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


SignedIn = Annotated[Browser, Depends(_browser)]
Checked = Annotated[Browser, Depends(_checked)]
