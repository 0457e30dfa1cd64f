"""Sessions: log in with a password, authenticate bearer tokens, log out, change passwords.

A token is ``secrets.token_urlsafe(32)`` shown once to the client; the database keeps only its SHA-256, so
a copy of the database cannot be replayed as a login. Password checks are limited per client address and per
account by :class:`~aiposter.services.limits.LoginLimiter`, in the database, counted before the check.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session, select

from aiposter.core.models import AuthSession, User, utcnow
from aiposter.passwords import hash_password, needs_rehash, verify_password
from aiposter.services import Invalid, NotFound, ServiceError, audit
from aiposter.services.audit import Actor
from aiposter.services.limits import LoginLimiter, RateLimited
from aiposter.services.users import set_password

# How stale ``last_used_at`` may get before a request writes it again: one write a minute, not per request.
TOUCH_INTERVAL = timedelta(seconds=60)
# Verified against when the email is unknown, so a login takes as long whether or not the account exists.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


# How long a token lookup on the read endpoints (GET /posts, GET /watches) may be reused without asking the
# database again. Logging out, revoking, disabling or deleting in *this* process forgets the cache when its
# transaction commits, so those take effect at once here; another process (a second API worker, the CLI)
# reaches this process within this many seconds.
CACHE_SECONDS = 2.0


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _known_client(s: Session, user: User, client: str) -> bool:
    """The user has logged in from this address before (a session row from it still exists)."""
    q = sa.select(AuthSession.id).where(AuthSession.user_id == user.id, AuthSession.client == client[:200])
    return s.execute(q.limit(1)).first() is not None


def login(s: Session, limiter: LoginLimiter, email: str, password: str, client: str,
          lifetime_hours: int) -> tuple[str, AuthSession, User]:
    """Check the password and open a session. Returns the token (shown once), the session and the user.

    The attempt is counted (and committed) before the password is checked; see :mod:`.limits`. Failures
    are audited and committed before the error is raised (the request's unit of work rolls back)."""
    email = email.strip().lower()
    actor = Actor(None, client)
    user = s.exec(select(User).where(User.email == email)).first()
    known = user is not None and _known_client(s, user, client)
    try:
        limiter.login_attempt(s, email, client, known)
    except RateLimited as exc:
        if exc.first:
            audit.record(s, "login.locked", actor, subject=user, subject_email=email, detail=exc.message)
            s.commit()
        raise
    if user is None or not user.password_hash:
        verify_password(_DUMMY_HASH, password)
        _failed(s, actor, user, email, "unknown account" if user is None else "account without a password")
        raise Unauthorized("wrong email or password")
    if not verify_password(user.password_hash, password):
        _failed(s, actor, user, email, "wrong password")
        raise Unauthorized("wrong email or password")
    if user.disabled:
        _failed(s, actor, user, email, "account disabled")
        raise Forbidden("this account is disabled")
    limiter.login_succeeded(s, email, client, known)
    audit.record(s, "login.succeeded", Actor(user, client))
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


def _failed(s: Session, actor: Actor, user: User | None, email: str, why: str) -> None:
    audit.record(s, "login.failed", actor, subject=user, subject_email=email, detail=why)
    s.commit()


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


@dataclass(frozen=True)
class Principal:
    """Who is calling a read endpoint: just the ids, immutable, safe to share between requests."""

    user_id: int
    session_id: int
    role: str


class _Cache:
    """token hash -> (monotonic deadline, Principal | Unauthorized message); bounded, thread-safe."""

    def __init__(self, max_entries: int = 10_000):
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal | str]] = {}
        self._max = max_entries
        self.generation = 0  # bumped by every clear: a lookup that raced a clear is not stored

    def get(self, key: str) -> Principal | str | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, value: Principal | str, generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + CACHE_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


_cache = _Cache()
_CHANGED = "aiposter_auth_changed"


def forget_cached(s: Session) -> None:
    """Sessions or users changed in this unit of work: forget cached lookups now and again at its commit."""
    s.info[_CHANGED] = True
    _cache.clear()


@event.listens_for(Session, "after_flush")
def _after_flush(s, _ctx) -> None:
    if any(isinstance(o, (User, AuthSession)) for o in (*s.dirty, *s.deleted)):
        forget_cached(s)


@event.listens_for(Session, "after_commit")
def _after_commit(s) -> None:
    if s.info.pop(_CHANGED, False):
        _cache.clear()


_PRINCIPAL = (sa.select(AuthSession.id, AuthSession.user_id, AuthSession.revoked_at, AuthSession.expires_at,
                        AuthSession.last_used_at, User.disabled, User.role)
              .join(User, User.id == AuthSession.user_id).where(AuthSession.token_hash == sa.bindparam("h")))


def cached_principal(token: str) -> Principal | None:
    """The cached Principal of ``token`` (Unauthorized if it was cached as refused), None on a miss."""
    hit = _cache.get(hash_token(token))
    if isinstance(hit, str):
        raise Unauthorized(hit)
    return hit


def principal(conn: sa.Connection, token: str) -> tuple[Principal, datetime | None]:
    """:func:`authenticate` for the read endpoints, through the short cache: the Principal, and the time to
    write as ``last_used_at`` when it is due (else None; the caller writes it in its own transaction)."""
    key = hash_token(token)
    hit = _cache.get(key)
    if isinstance(hit, Principal):
        return hit, None
    if isinstance(hit, str):
        raise Unauthorized(hit)
    generation = _cache.generation
    row = conn.execute(_PRINCIPAL, {"h": key}).first()
    now = utcnow()
    why = ("invalid token" if row is None else
           "the session was logged out" if row.revoked_at is not None else
           "the session has expired; log in again" if row.expires_at <= now else
           "this account is disabled" if row.disabled else None)
    if why:
        _cache.put(key, why, generation)
        raise Unauthorized(why)
    if row.expires_at - now < timedelta(seconds=CACHE_SECONDS):
        generation = -1  # about to expire: not cached past its expiry
    p = Principal(row.user_id, row.id, row.role)
    _cache.put(key, p, generation)
    touch = now if row.last_used_at is None or now - row.last_used_at > TOUCH_INTERVAL else None
    return p, touch


def touch(s: Session, session_id: int, now: datetime) -> None:
    s.execute(sa.update(AuthSession).where(AuthSession.id == session_id).values(last_used_at=now))


def active_sessions(s: Session, user: User) -> list[AuthSession]:
    """The user's sessions that still work (not signed out, not expired), newest first."""
    return list(s.exec(select(AuthSession).where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None),
                                                 AuthSession.expires_at > utcnow())
                       .order_by(AuthSession.id.desc())))


def end_session(s: Session, user: User, session_id: int) -> None:
    """Sign out one of the user's own sessions (another user's is not found)."""
    row = s.get(AuthSession, session_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"no session {session_id}")
    logout(s, row)


def logout(s: Session, session: AuthSession) -> None:
    session.revoked_at = utcnow()
    forget_cached(s)


def revoke_sessions(s: Session, user: User, keep: AuthSession | None = None) -> int:
    q = sa.update(AuthSession).where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
    if keep is not None:
        q = q.where(AuthSession.id != keep.id)
    forget_cached(s)
    return s.execute(q.values(revoked_at=utcnow())).rowcount


def change_password(s: Session, limiter: LoginLimiter, actor: Actor, user: User, current: str, new: str,
                    keep: AuthSession | None) -> int:
    """Set a new password and log out every other session. Returns how many were revoked."""
    check_password(s, limiter, actor, user, current, "the current password is wrong")
    try:
        set_password(s, user, new, actor)
    except Invalid as exc:
        raise Invalid(exc.message, field="new_password") from None
    return revoke_sessions(s, user, keep)


def check_password(s: Session, limiter: LoginLimiter, actor: Actor, user: User, password: str,
                   wrong: str = "the password is wrong") -> None:
    """Re-authentication of a logged-in user, rate-limited like logins (counted before the check)."""
    try:
        limiter.reauth_attempt(s, user.id)
    except RateLimited as exc:
        if exc.first:
            audit.record(s, "password.locked", actor, subject=user, detail=exc.message)
            s.commit()
        raise
    if not verify_password(user.password_hash, password):
        audit.record(s, "password.check_failed", actor, subject=user)
        s.commit()
        raise Forbidden(wrong)
    limiter.reauth_succeeded(s, user.id)

