"""Sessions: log in with a password, authenticate bearer tokens, log out, change passwords.

A token is ``secrets.token_urlsafe(32)`` shown once to the client; the database keeps only its SHA-256, so
a copy of the database cannot be replayed as a login. Failed logins are limited per account and per client
address by :class:`LoginLimiter`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.core.models import AuthSession, User, utcnow
from aiposter.passwords import hash_password, needs_rehash, verify_password
from aiposter.services import Invalid, ServiceError
from aiposter.services.users import set_password

# How stale ``last_used_at`` may get before a request writes it again: one write a minute, not per request.
TOUCH_INTERVAL = timedelta(seconds=60)
# Verified against when the email is unknown, so a login takes as long whether or not the account exists.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class RateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginLimiter:
    """Sliding-window count of failed logins per key (``account:<email>``, ``client:<address>``).

    In memory, per process: restarts forget, and N API replicas allow N times the attempts. That bound is
    kept on purpose, so that a flood of failures never turns into database writes.
    """

    MAX_KEYS = 100_000

    def __init__(self, per_account: int, per_client: int, window_seconds: int, clock=time.monotonic):
        self.limits = {"account": per_account, "client": per_client}
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def check(self, email: str, client: str) -> None:
        """Raise RateLimited while either key has used up its failures in the window."""
        now = self.clock()
        with self._lock:
            for kind, key in (("account", email), ("client", client)):
                q = self._recent(f"{kind}:{key}", now)
                if len(q) >= self.limits[kind]:
                    retry = max(1, int(q[0] + self.window - now) + 1)
                    raise RateLimited(f"too many failed logins for this {kind}; try again in {retry} s",
                                      retry)

    def failed(self, email: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.MAX_KEYS:
                self._prune(now)
            for kind, key in (("account", email), ("client", client)):
                q = self._recent(f"{kind}:{key}", now)
                q.append(now)
                self._failures[f"{kind}:{key}"] = q

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop(f"account:{email}", None)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items() if not q or q[-1] <= now - self.window]:
            del self._failures[key]
        while len(self._failures) >= self.MAX_KEYS:  # still full of live keys: drop the oldest entries
            self._failures.pop(next(iter(self._failures)))


def login(s: Session, limiter: LoginLimiter, email: str, password: str, client: str,
          lifetime_hours: int) -> tuple[str, AuthSession, User]:
    """Check the password and open a session. Returns the token (shown once), the session and the user."""
    email = email.strip().lower()
    limiter.check(email, client)
    user = s.exec(select(User).where(User.email == email)).first()
    if user is None or not user.password_hash:
        verify_password(_DUMMY_HASH, password)
        limiter.failed(email, client)
        raise Unauthorized("wrong email or password")
    if not verify_password(user.password_hash, password):
        limiter.failed(email, client)
        raise Unauthorized("wrong email or password")
    if user.disabled:
        raise Forbidden("this account is disabled")
    limiter.succeeded(email)
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    now = utcnow()
    # Expired and revoked sessions have no further use: drop the user's old ones at each login.
    s.execute(sa.delete(AuthSession).where(AuthSession.user_id == user.id).where(
        sa.or_(AuthSession.expires_at < now, AuthSession.revoked_at.is_not(None))))
    token = secrets.token_urlsafe(32)
    session = AuthSession(user_id=user.id, token_hash=hash_token(token), created_at=now, last_used_at=now,
                          expires_at=now + timedelta(hours=lifetime_hours), client=client[:200])
    s.add(session)
    s.flush()
    return token, session, user


def authenticate(s: Session, token: str) -> tuple[User, AuthSession]:
    """The user behind a bearer token; Unauthorized for unknown, expired, revoked or disabled."""
    row = s.exec(select(AuthSession, User).join(User, User.id == AuthSession.user_id)
                 .where(AuthSession.token_hash == hash_token(token))).first()
    now = utcnow()
    if row is None:
        raise Unauthorized("invalid token")
    session, user = row
    if session.revoked_at is not None:
        raise Unauthorized("the session was logged out")
    if session.expires_at <= now:
        raise Unauthorized("the session has expired; log in again")
    if user.disabled:
        raise Unauthorized("this account is disabled")
    if session.last_used_at is None or now - session.last_used_at > TOUCH_INTERVAL:
        session.last_used_at = now
    return user, session


def logout(s: Session, session: AuthSession) -> None:
    session.revoked_at = utcnow()


def revoke_sessions(s: Session, user: User, keep: AuthSession | None = None) -> int:
    q = sa.update(AuthSession).where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        q = q.where(AuthSession.id != keep.id)
    return s.execute(q.values(revoked_at=utcnow())).rowcount


def change_password(s: Session, user: User, current: str, new: str, keep: AuthSession | None) -> int:
    """Set a new password and log out every other session. Returns how many were revoked."""
    if not verify_password(user.password_hash, current):
        raise Forbidden("the current password is wrong")
    try:
        set_password(s, user, new)
    except Invalid as exc:
        raise Invalid(exc.message, field="new_password") from None
    return revoke_sessions(s, user, keep)


def check_password(user: User, password: str) -> None:
    if not verify_password(user.password_hash, password):
        raise Forbidden("the password is wrong")

