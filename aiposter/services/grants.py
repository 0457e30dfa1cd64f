"""Choosing which Facebook Pages or Instagram accounts to use after a Facebook Login.

A login that grants one account connects it at once. A login that grants several keeps them as a pending
:class:`~aiposter.core.models.MetaGrant`: the accounts and their Page tokens encrypted with the keyring and
bound to the row, owned by the user, expiring after :data:`GRANT_TTL`. The user then picks
(:func:`select`: exactly those become connections, the grant is deleted) or gives up (:func:`discard`).
Housekeeping deletes expired grants (:func:`sweep`); deleting the account deletes its grants (cascade).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.core.models import Connection, MetaGrant, User, utcnow
from aiposter.crypto import Keyring, grant_context
from aiposter.services import Invalid, ServiceError, get_owned
from aiposter.services.connections import store
from aiposter.services.oauth import Account

GRANT_TTL = timedelta(minutes=30)
PROVIDERS = ("facebook", "instagram")


class Expired(ServiceError):
    """The pending choice is past its time: the Page tokens in it are no longer offered."""

    code = "gone"


def hold(s: Session, keyring: Keyring, user_id: int, provider: str, accounts: list[Account]) -> MetaGrant:
    """Keep the granted accounts until the user picks. A newer login for the same provider replaces the
    user's earlier pending choice; expired grants of anyone are swept on the way."""
    now = utcnow()
    sweep(s, now)
    s.execute(sa.delete(MetaGrant).where(MetaGrant.user_id == user_id, MetaGrant.provider == provider))
    grant = MetaGrant(user_id=user_id, provider=provider, created_at=now, expires_at=now + GRANT_TTL)
    s.add(grant)
    s.flush()
    plain = [{"account_id": a.account_id, "account_name": a.account_name, "credentials": a.credentials,
              "scopes": a.scopes, "expires_at": a.expires_at.isoformat() if a.expires_at else None}
             for a in accounts]
    grant.candidates = keyring.encrypt(json.dumps(plain), context=grant_context(grant.id))
    s.flush()
    return grant


def get_grant(s: Session, grant_id: int, user: User, now: datetime | None = None) -> MetaGrant:
    """The user's pending grant; NotFound for a missing or another user's, Expired once past its time."""
    grant = get_owned(s, MetaGrant, grant_id, user, "pending choice of accounts")
    if grant.expires_at <= (now or utcnow()):
        raise Expired(f"this choice of {_what(grant.provider)} expired after {_minutes()} minutes and its "
                      "tokens were dropped; connect again")
    return grant


def _what(provider: str) -> str:
    return "Instagram accounts" if provider == "instagram" else "Facebook Pages"


def _minutes() -> int:
    return int(GRANT_TTL.total_seconds() // 60)


def _accounts(keyring: Keyring, grant: MetaGrant) -> list[Account]:
    rows = json.loads(keyring.decrypt(grant.candidates or "", context=grant_context(grant.id)))
    return [Account(r["account_id"], r["account_name"], r["credentials"], r["scopes"],
                    datetime.fromisoformat(r["expires_at"]) if r.get("expires_at") else None) for r in rows]


def grant_dict(s: Session, keyring: Keyring, grant: MetaGrant) -> dict:
    """The grant and its candidates, without any token. Accounts the user has already connected say so
    (``connected``, with the connection's id and status) and are the ones pre-selected."""
    existing = {c.account_id: c for c in s.exec(select(Connection).where(
        Connection.user_id == grant.user_id, Connection.provider == grant.provider))}
    candidates = []
    for a in _accounts(keyring, grant):
        c = existing.get(a.account_id)
        candidates.append({"account_id": a.account_id, "account_name": a.account_name,
                           "page_id": a.credentials.get("page_id", a.account_id), "connected": c is not None,
                           "connection_id": c.id if c else None, "connection_status": c.status if c else None})
    return {"id": grant.id, "provider": grant.provider, "expires_at": grant.expires_at.isoformat(timespec="seconds"),
            "candidates": candidates}


def select_accounts(s: Session, keyring: Keyring, user: User, grant_id: int, account_ids: list[str],
                    client: str = "") -> list[Connection]:
    """Connect exactly the chosen accounts (an already connected one gets the new token and is active
    again), then forget the grant and the other accounts' tokens. Accounts left out are not disconnected."""
    grant = get_grant(s, grant_id, user)
    wanted = list(dict.fromkeys(str(a).strip() for a in account_ids if str(a).strip()))
    if not wanted:
        raise Invalid(f"choose at least one of the {_what(grant.provider)} to connect", field="account_ids")
    offered = {a.account_id: a for a in _accounts(keyring, grant)}
    unknown = [a for a in wanted if a not in offered]
    if unknown:
        raise Invalid(f"not among the accounts this login granted: {', '.join(unknown)}", field="account_ids")
    linked = store(s, keyring, user.id, grant.provider, [offered[a] for a in wanted], client)
    s.delete(grant)
    s.flush()
    return linked


def discard(s: Session, user: User, grant_id: int) -> None:
    """Give up the choice: nothing is connected, the tokens in it are deleted now (expired or not)."""
    grant = get_owned(s, MetaGrant, grant_id, user, "pending choice of accounts")
    s.delete(grant)
    s.flush()


def sweep(s: Session, now: datetime | None = None) -> int:
    """Delete every expired grant, with the tokens in it (housekeeping)."""
    return s.execute(sa.delete(MetaGrant).where(MetaGrant.expires_at <= (now or utcnow()))).rowcount or 0
