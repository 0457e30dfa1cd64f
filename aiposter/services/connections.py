"""Connections: a user's links to Drive, Facebook Pages, Instagram and Threads.

Starting a connection stores a pending :class:`OAuthState` (single-use, short-lived, bound to the user,
holding the PKCE verifier encrypted); finishing it exchanges the code and stores the tokens encrypted with
the keyring, bound to their row. Disconnecting deletes the row, and the ciphertext with it, at once.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.config import Config
from aiposter.core import pauses
from aiposter.core.models import Connection, MetaGrant, OAuthState, User, utcnow
from aiposter.crypto import Keyring, connection_context
from aiposter.services import NotFound, audit, get_owned, oauth
from aiposter.services.audit import OPERATOR, Actor
from aiposter.services.auth import hash_token
from aiposter.services.oauth import OAuthFailed


def list_connections(s: Session, user: User) -> list[Connection]:
    return list(s.exec(select(Connection).where(Connection.user_id == user.id).order_by(Connection.id)))


def get_connection(s: Session, connection_id: int, user: User) -> Connection:
    return get_owned(s, Connection, connection_id, user, "connection")


def delete_connection(s: Session, connection: Connection, actor: Actor = OPERATOR) -> None:
    """Forget the account: the encrypted tokens go with the row; watch targets using it go too. Targets
    that waited for it to be reconnected are released, so they fail at once as disconnected."""
    pauses.lift(s, f"connection:{connection.id}", "the account was disconnected")
    owner = s.get(User, connection.user_id)
    audit.record(s, "connection.removed", actor, subject=owner, detail=_describe(connection))
    s.delete(connection)
    s.flush()


def _describe(c: Connection) -> str:
    return f"connection {c.id}: {c.provider} account {c.account_name!r} ({c.account_id})"


EXPIRY_WARNING = timedelta(days=7)


def flag_expiring_tokens(s: Session, now=None) -> list[Connection]:
    """Mark connections whose token expires within a week (``expiring``) or has expired (``expired``),
    with the reason in ``last_error``, so that no token lapses unnoticed. Returns the ones that changed."""
    now = now or utcnow()
    changed = []
    q = select(Connection).where(Connection.token_expires_at.is_not(None),
                                 Connection.token_expires_at <= now + EXPIRY_WARNING,
                                 Connection.status.in_(("active", "expiring")))
    for c in s.exec(q):
        status = "expired" if c.token_expires_at <= now else "expiring"
        if status == c.status:
            continue
        when = f"{c.token_expires_at:%Y-%m-%d %H:%M} UTC"
        c.status = status
        c.last_error = (f"the {c.provider} token expired at {when}; reconnect the account" if status == "expired"
                        else f"the {c.provider} token expires at {when}; reconnect the account before then")
        c.updated_at = now
        changed.append(c)
    return changed


def connection_dict(c: Connection) -> dict:
    return {"id": c.id, "provider": c.provider, "account_id": c.account_id, "account_name": c.account_name,
            "scopes": c.scopes.split() if c.scopes else [], "status": c.status, "last_error": c.last_error,
            "token_expires_at": _iso(c.token_expires_at), "created_at": _iso(c.created_at),
            "updated_at": _iso(c.updated_at)}


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


def _state_context(state_hash: str) -> str:
    return f"oauth_state:{state_hash}"


def start(s: Session, cfg: Config, keyring: Keyring, user: User, provider: str, redirect_uri: str,
          browser_nonce: str | None = None) -> dict:
    """Begin an authorization: the URL to send the user's browser to. ``browser_nonce``: the secret the API
    puts in an HttpOnly cookie of the browser that asked; only that browser can finish at the callback."""
    oauth.check_configured(cfg, provider)
    now = utcnow()
    s.execute(sa.delete(OAuthState).where(OAuthState.expires_at < now))
    state = secrets.token_urlsafe(32)
    verifier = oauth.new_code_verifier() if provider == "google_drive" else None
    row = OAuthState(user_id=user.id, provider=provider, state_hash=hash_token(state), created_at=now,
                     expires_at=now + timedelta(seconds=cfg.oauth.state_ttl_seconds),
                     browser_hash=hash_token(browser_nonce) if browser_nonce else None)
    if verifier:
        row.code_verifier = keyring.encrypt(verifier, context=_state_context(row.state_hash))
    s.add(row)
    s.flush()
    url = oauth.authorize_url(cfg, provider, redirect_uri, state, verifier)
    return {"provider": provider, "authorize_url": url, "state": state, "redirect_uri": redirect_uri,
            "expires_at": _iso(row.expires_at)}


OTHER_BROWSER = ("this browser did not start this connection, so nothing was linked. If you started it "
                 "yourself through the API, finish it there: POST /api/v1/connections/{provider}/finish with "
                 "this state and code, signed in; otherwise start the connection again from this browser")


def take_state(s: Session, keyring: Keyring, provider: str, state: str, user: User | None = None,
               browser_nonce: str | None = None) -> tuple[int, str | None]:
    """Consume a pending authorization: (user id, PKCE verifier). Unknown, expired, reused, another
    provider's or (when ``user`` is given) another user's state are all the same error.

    Without ``user`` (the browser callback, which carries no token) the browser must show the cookie nonce
    given at ``start``: whoever else opens a user's authorization link cannot attach their own account to
    that user's. The state is then left unspent, so the real user can still finish."""
    row = s.exec(select(OAuthState).where(OAuthState.state_hash == hash_token(state))).first()
    if row is None or row.provider != provider or (user is not None and row.user_id != user.id):
        raise OAuthFailed("unknown or already used authorization state; start the connection again")
    # A state without a browser binding was started from the server's terminal (``aiposter connect``): the
    # link was printed only to the operator, so its callback may finish it in whatever browser they use.
    if user is None and row.browser_hash is not None and (
            not browser_nonce or not secrets.compare_digest(row.browser_hash, hash_token(browser_nonce))):
        raise OAuthFailed(OTHER_BROWSER.format(provider=provider))
    if row.expires_at <= utcnow():
        raise OAuthFailed("the authorization took too long and expired; start the connection again")
    s.delete(row)
    s.flush()
    verifier = keyring.decrypt(row.code_verifier, context=_state_context(row.state_hash)) \
        if row.code_verifier else None
    return row.user_id, verifier


def store(s: Session, keyring: Keyring, user_id: int, provider: str, accounts: list[oauth.Account],
          client: str = "") -> list[Connection]:
    """Create or refresh one connection per account (reconnecting replaces the tokens in place)."""
    out = []
    for a in accounts:
        c = s.exec(select(Connection).where(Connection.user_id == user_id, Connection.provider == provider,
                                            Connection.account_id == a.account_id)).first()
        if c is None:
            c = Connection(user_id=user_id, provider=provider, account_id=a.account_id)
            s.add(c)
            s.flush()
        c.account_name = a.account_name[:200]
        c.credentials = keyring.encrypt(json.dumps(a.credentials), context=connection_context(c.id))
        c.scopes = " ".join(a.scopes)
        c.token_expires_at = a.expires_at
        c.status, c.last_error = "active", None
        c.updated_at = utcnow()
        # Targets that waited for this account to be reconnected go now.
        pauses.lift(s, f"connection:{c.id}", "the account was reconnected")
        out.append(c)
    owner = s.get(User, user_id)
    for c in out:
        audit.record(s, "connection.added", Actor(owner, client), subject=owner, detail=_describe(c))
    s.flush()
    return out


def finish(s: Session, cfg: Config, keyring: Keyring, provider: str, state: str, code: str, redirect_uri: str,
           user: User | None = None, browser_nonce: str | None = None,
           client: str = "") -> list[Connection] | MetaGrant:
    """Complete an authorization: consume the state, exchange the code, store the accounts.

    A Facebook Login that granted several Pages (or Instagram accounts) stores none of them: it returns a
    pending :class:`MetaGrant` for the user to pick from (:mod:`aiposter.services.grants`). One account
    is connected at once.

    The consumed state is committed before the provider is called, so a state works once even if the
    exchange fails, and no transaction (on SQLite: the write lock) stays open during network calls."""
    from aiposter.services import grants

    oauth.check_configured(cfg, provider)
    user_id, verifier = take_state(s, keyring, provider, state, user, browser_nonce)
    s.commit()
    accounts = oauth.exchange(cfg, provider, code, redirect_uri, verifier)
    if s.get(User, user_id) is None:
        raise NotFound("the account that started this connection no longer exists")
    if provider in grants.PROVIDERS and len(accounts) > 1:
        return grants.hold(s, keyring, user_id, provider, accounts)
    return store(s, keyring, user_id, provider, accounts, client)
