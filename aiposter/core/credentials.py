"""Credentials with a lifecycle: the one place that loads a connection's secrets for an adapter, saves
refreshed tokens (encrypted, committed), marks a connection ``needs_reauth`` or ``error`` with a reason,
and says whether a connection can be used right now.

Two expiries, never confused:

* a short-lived **access token** (Google's lasts an hour) is refreshed here, by housekeeping; its expiry
  lives inside the encrypted secrets (``secrets["expiry"]``);
* ``Connection.token_expires_at`` is when the **user** must reconnect (a long-lived token's end, such as
  Threads' 60 days). It is None where a refresh token keeps the connection alive (Google).

A connection that cannot be used (``needs_reauth``, ``expired``, ``error``...) pauses its scope
``connection:<id>``: its targets wait without spending attempts and show why, and are released the moment
the connection is active again (reconnecting, or :meth:`CredentialStore.mark` ``active``).

Refreshers are per provider (:data:`REFRESHERS`); Google's is here. Meta and Threads plug theirs in with
their issue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from aiposter.config import Config
from aiposter.core import faults, pauses, states
from aiposter.core.errors import StepError
from aiposter.core.models import Connection, PostTarget, utcnow
from aiposter.crypto import DecryptError, Keyring, connection_context
from aiposter.db import session_scope
from aiposter.logs import fields

log = logging.getLogger("aiposter.credentials")

ACTIVE, NEEDS_REAUTH, ERROR = "active", "needs_reauth", "error"
MARKS = (ACTIVE, NEEDS_REAUTH, ERROR)
# Statuses in which a connection can be used. "expiring" still works: it is a warning to reconnect soon.
USABLE = ("active", "expiring")
REFRESH_AHEAD = timedelta(minutes=10)  # refresh an access token this long before it expires
CHECK_SPACING = timedelta(minutes=1)   # replicas do not refresh the same connection within this


class CredentialsError(StepError):
    """A connection's credentials cannot be had: gone, undecryptable, or refused."""


@dataclass
class Credentials:
    connection_id: int
    user_id: int
    provider: str
    account_id: str
    account_name: str
    secrets: dict = field(repr=False)
    status: str
    token_expires_at: datetime | None


class CredentialStore:
    """What adapters get instead of the pipeline's context: load, save refreshed tokens, mark a status."""

    def __init__(self, engine: Engine, keyring: Keyring | None, cfg: Config):
        self.engine = engine
        self.keyring = keyring
        self.cfg = cfg

    def load(self, connection_id: int) -> Credentials:
        with session_scope(self.engine) as s:
            return self.load_in(s, connection_id)

    def load_in(self, s: Session, connection_id: int) -> Credentials:
        """:meth:`load` inside the caller's transaction (the pipeline reads them with the target)."""
        c = s.get(Connection, connection_id)
        if c is None:
            raise CredentialsError(f"connection {connection_id} no longer exists (the account was "
                                   "disconnected); reconnect it", permanent=True, code="no_connection")
        if not c.credentials:
            raise CredentialsError(f"the {c.provider} account {c.account_name} has no stored tokens; "
                                   "reconnect it", permanent=True, code="auth")
        if self.keyring is None:
            raise CredentialsError("no encryption key loaded; cannot read stored tokens", permanent=True,
                                   code="config")
        try:
            secrets = json.loads(self.keyring.decrypt(c.credentials, context=connection_context(c.id)))
        except (DecryptError, ValueError) as exc:
            raise CredentialsError(f"the stored tokens of connection {c.id} cannot be read ({exc}); "
                                   "check [security] encryption keys", permanent=True, code="config") from None
        return Credentials(c.id, c.user_id, c.provider, c.account_id, c.account_name, secrets, c.status,
                           c.token_expires_at)

    def save(self, connection_id: int, secrets: dict, *, expires_at: datetime | None = None) -> None:
        """Store refreshed secrets, encrypted and committed before the caller uses them. ``expires_at``:
        a new reconnect-by time (a long-lived token renewed); None leaves it unchanged."""
        if self.keyring is None:
            raise CredentialsError("no encryption key loaded; cannot store tokens", permanent=True, code="config")
        with session_scope(self.engine) as s:
            c = s.get(Connection, connection_id)
            if c is None:
                return  # disconnected meanwhile: the tokens must not come back
            c.credentials = self.keyring.encrypt(json.dumps(secrets), context=connection_context(c.id))
            if expires_at is not None:
                c.token_expires_at = expires_at
            c.last_checked_at = c.updated_at = utcnow()

    def mark(self, connection_id: int, status: str, reason: str | None) -> None:
        """``active`` releases every target waiting for the connection; ``needs_reauth`` and ``error``
        make them wait (``connection:<id>`` paused), with ``reason`` shown on the connection and posts."""
        if status not in MARKS:
            raise ValueError(f"unknown connection status {status!r} (known: {', '.join(MARKS)})")
        with session_scope(self.engine) as s:
            mark(s, self.cfg, connection_id, status, reason)


def mark(s: Session, cfg: Config, connection_id: int, status: str, reason: str | None) -> None:
    c = s.get(Connection, connection_id)
    if c is None:
        return
    c.status, c.last_error = status, (None if status == ACTIVE else reason)
    c.last_checked_at = c.updated_at = utcnow()
    scope = f"connection:{connection_id}"
    if status == ACTIVE:
        pauses.lift(s, scope, "the connection is active again")
    else:
        pauses.pause(s, cfg, scope, StepError(unusable_reason(c) or reason or status, permanent=True,
                                              code="auth" if status == NEEDS_REAUTH else "config"),
                     connection_id=connection_id)
        if status == NEEDS_REAUTH:
            from aiposter.services import notify

            notify.connection_needs_reauth(s, c)
    log.warning("connection.marked", extra=fields(connection_id=connection_id, status=status, reason=reason))


def unusable_reason(c: Connection | None, now: datetime | None = None) -> str | None:
    """Why a connection cannot be used for posting or reading right now, or None if it can."""
    if c is None:
        return "the account was disconnected; reconnect it and retry"
    who = f"the {c.provider} account {c.account_name or c.account_id}".rstrip()
    if c.status not in USABLE:
        what = {"needs_reauth": "needs to be reconnected", "expired": "has expired",
                "revoked": "was revoked", "error": "has an error"}.get(c.status, f"is {c.status}")
        return f"{who} {what}" + (f": {c.last_error}" if c.last_error else "; reconnect it")
    if not c.credentials:
        return f"{who} has no stored tokens; reconnect it"
    if c.token_expires_at is not None and c.token_expires_at <= (now or utcnow()):
        return f"{who} expired at {c.token_expires_at:%Y-%m-%d %H:%M} UTC; reconnect it"
    return None


def hold_target(engine: Engine, cfg: Config, target_id: int, owner: str) -> bool:
    """Whether the target must wait for its account or destination (held, no attempt spent, reason shown).

    A connection that cannot be used pauses ``connection:<id>``; an adapter's pause of the destination
    (``destination:<platform>``) or of the account holds the target too."""
    with session_scope(engine) as s:
        return hold_target_in(s, cfg, target_id, owner)


def hold_target_in(s: Session, cfg: Config, target_id: int, owner: str) -> bool:
    """:func:`hold_target` inside the caller's transaction (the pipeline reads the target in the same one)."""
    now = utcnow()
    t = s.get(PostTarget, target_id)
    if t is None or t.status in states.TARGET_TERMINAL:
        return False
    scopes = [f"destination:{t.platform}"]
    if t.connection_id is not None:
        scope = f"connection:{t.connection_id}"
        problem = unusable_reason(s.get(Connection, t.connection_id), now)
        if problem is not None:
            p = pauses.get(s, scope)
            if p is None or p.until <= now:
                p = pauses.pause(s, cfg, scope, StepError(problem, permanent=True, code="auth"),
                                 connection_id=t.connection_id, now=now)
            pauses.hold_target(s, target_id, scope, p.until, f"waiting: {problem}")
            return True
        scopes.append(scope)
    if not pauses.any_of(s, scopes):
        return False  # the common case: nothing paused, one query for every scope
    for scope in scopes:
        admission = pauses.admit(s, scope, f"{owner}:target:{target_id}", now=now,
                                 probe_seconds=cfg.daemon.lease_seconds)
        if admission.held:
            pauses.hold_target(s, target_id, scope, admission.until, admission.reason)
            return True
    return False


# --------------------------------------------------------------------------- refreshing


Refresher = Callable[[Credentials, Config], "Refreshed"]


@dataclass
class Refreshed:
    secrets: dict
    expires_at: datetime | None = None  # a new reconnect-by time, for long-lived tokens


def refresh_google(creds: Credentials, cfg: Config) -> Refreshed:
    """Renew the access token with google-auth against the configured ``token_uri``. Raises
    :class:`CredentialsError`: code ``auth`` when Google refuses the refresh token (``invalid_grant``:
    revoked, expired, or the app is in Testing for over 7 days), transient codes otherwise."""
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.credentials
    import requests

    g = cfg.oauth.google
    secret = g.client_secret.get_secret_value() if g.client_secret else None
    gcreds = google.oauth2.credentials.Credentials(
        token=creds.secrets.get("token"), refresh_token=creds.secrets.get("refresh_token"),
        token_uri=g.token_uri, client_id=g.client_id or creds.secrets.get("client_id"), client_secret=secret,
        scopes=creds.secrets.get("scopes"))
    session = requests.Session()
    try:
        gcreds.refresh(google.auth.transport.requests.Request(session=session))
    except google.auth.exceptions.RefreshError as exc:
        body = exc.args[1] if len(exc.args) > 1 else None
        fault = faults.classify_http(400, body=body if isinstance(body, dict | str) else str(exc), who="Google")
        retryable = getattr(exc, "retryable", False) or fault.kind in (faults.TRANSIENT, faults.RATE_LIMITED)
        code = "server_error" if retryable and fault.kind == faults.PERMANENT else fault.code
        if fault.kind == faults.PERMANENT and not retryable:
            code = "auth"  # a refresh refused for any other reason still means the user must reconnect
        raise CredentialsError(f"Google refused to refresh the access token: {_first_line(exc)}",
                               permanent=not retryable, code=code) from None
    except google.auth.exceptions.TransportError as exc:
        fault = faults.classify_exception(exc.__cause__ or exc, who="Google", url=g.token_uri)
        raise CredentialsError(fault.message if fault else f"Google: cannot refresh: {_first_line(exc)}",
                               code=fault.code if fault else "connection") from None
    finally:
        session.close()
    expiry = gcreds.expiry.replace(tzinfo=UTC) if gcreds.expiry else None
    secrets = dict(creds.secrets, token=gcreds.token, refresh_token=gcreds.refresh_token or
                   creds.secrets.get("refresh_token"), expiry=expiry.isoformat() if expiry else None)
    return Refreshed(secrets)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]


def _google_due(secrets: dict, now: datetime) -> bool:
    raw = secrets.get("expiry")
    if not secrets.get("refresh_token"):
        return False
    if not raw:
        return True
    try:
        expiry = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return True
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=UTC)
    return expiry - now <= REFRESH_AHEAD


def _meta(name: str):
    """A refresher or check of aiposter.publishers.meta.wiring, imported when first used."""
    def call(*args):
        from aiposter.publishers.meta import wiring
        return getattr(wiring, name)(*args)
    return call


# provider -> (is a refresh due for these secrets?, refresher).
REFRESHERS: dict[str, tuple[Callable[[dict, datetime], bool], Refresher]] = {
    "google_drive": (_google_due, refresh_google),
    # Threads: a fresh 60-day token once the current one is a day old; Facebook/Instagram: Page tokens do
    # not expire, so debug_token checks daily that they still may publish (docs/publishing.md).
    "threads": (_meta("threads_due"), _meta("refresh_threads")),
    "facebook": (_meta("page_check_due"), _meta("check_page_token")),
    "instagram": (_meta("page_check_due"), _meta("check_page_token")),
}


def refresh_due(store: CredentialStore, now: datetime | None = None) -> dict[str, int]:
    """Housekeeping: refresh every usable connection whose access token expires soon. A connection is
    claimed through ``last_checked_at`` so that replicas do not refresh it twice. Refused refresh tokens
    mark the connection ``needs_reauth`` with the provider's reason."""
    now = now or utcnow()
    counts = {"refreshed": 0, "needs_reauth": 0, "failed": 0}
    with session_scope(store.engine) as s:
        ids = list(s.exec(select(Connection.id).where(Connection.provider.in_(list(REFRESHERS)),
                                                      Connection.status.in_(USABLE),
                                                      Connection.credentials.is_not(None))))
    for cid in ids:
        try:
            creds = store.load(cid)
        except CredentialsError:
            continue
        due, refresher = REFRESHERS[creds.provider]
        if not due(creds.secrets, now):
            continue
        with session_scope(store.engine) as s:
            claimed = s.execute(sa.update(Connection).where(Connection.id == cid).where(sa.or_(
                Connection.last_checked_at.is_(None), Connection.last_checked_at < now - CHECK_SPACING))
                .values(last_checked_at=now)).rowcount
        if not claimed:
            continue
        try:
            result = refresher(creds, store.cfg)
        except CredentialsError as exc:
            if exc.code == "auth":
                store.mark(cid, NEEDS_REAUTH, f"{exc}; reconnect the account")
                counts["needs_reauth"] += 1
            else:
                log.warning("connection.refresh_failed", extra=fields(connection_id=cid, error=str(exc)))
                counts["failed"] += 1
            continue
        store.save(cid, result.secrets, expires_at=result.expires_at)
        counts["refreshed"] += 1
        log.info("connection.refreshed", extra=fields(connection_id=cid, provider=creds.provider))
    return counts
