"""Pauses shared by every replica: "leave this adapter (or account) alone until T, because ...".

A fault of an adapter rather than of one item (a provider outage, a 429 with Retry-After, a daily quota
used up, a key refused, a wrong base URL, a connection that needs re-authorization) would fail every item
the same way, so the pipeline pauses the adapter's *scope* in the database (``captioner:openai``,
``source:google_drive``, ``destination:instagram``, ``connection:12``) and every replica respects it:
a post that reaches a paused scope is *held*. It waits without spending an attempt, names the pause in
``paused_by``, and its ``waiting_for`` shows the reason.

A pause lifts when its cause is fixed:

* **lifting** (``aiposter pauses clear``, reconnecting an account, a successful probe) deletes the row
  and releases every post and target it holds at once (they become due now);
* **config changed**: install-wide faults of a captioner store a fingerprint of the provider's config
  section; a replica whose section differs (the key was fixed, the model corrected) lifts the pause, in
  its housekeeping and whenever one of its posts meets the pause;
* **half-open probe**: once ``until`` has passed, one post at a time may try; success lifts the pause and
  releases the rest, failure pauses again for longer (exponential, capped at ``retry.max_delay_seconds``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from aiposter.config import Config
from aiposter.core import faults, states
from aiposter.core.errors import StepError
from aiposter.core.models import Pause, Post, PostTarget, utcnow
from aiposter.core.retry import Backoff
from aiposter.db import session_scope
from aiposter.logs import fields

log = logging.getLogger("aiposter.pauses")

# Longest wait a provider may ask for (a daily quota's RetryInfo); beyond that a probe finds out.
MAX_PAUSE_SECONDS = 24 * 3600


def pauses_adapter(error: StepError) -> bool:
    """Whether ``error`` is a fault of the adapter (pause it) rather than of the item (retry or fail it)."""
    kind = faults.CODE_KINDS.get(error.code or "")
    if kind is None:
        return False
    return kind in (faults.AUTH, faults.CONFIG, faults.QUOTA) or not error.permanent


def install_wide(error: StepError) -> bool:
    """Faults that only a person fixes (key, billing, base URL, model): a config change may lift them."""
    return faults.CODE_KINDS.get(error.code or "") in (faults.AUTH, faults.CONFIG, faults.QUOTA)


def fingerprint(section: BaseModel) -> str:
    """A digest of a config section, secrets included (so a new key changes it); only the digest is stored."""
    data = json.dumps(section.model_dump(), sort_keys=True,
                      default=lambda v: v.get_secret_value() if isinstance(v, SecretStr) else str(v))
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def captioner_fingerprint(cfg: Config, name: str) -> str | None:
    section = getattr(cfg.captioner, name, None)
    return fingerprint(section) if isinstance(section, BaseModel) else None


def label(scope: str) -> str:
    """``captioner:openai`` -> ``captioner openai``, for messages."""
    return scope.replace(":", " ", 1)


def describe(p: Pause, now: datetime | None = None) -> str:
    now = now or utcnow()
    if p.until > now:
        return f"waiting: {label(p.scope)} is paused until {p.until:%Y-%m-%d %H:%M:%S} UTC: {p.reason}"
    return f"waiting: {label(p.scope)} was paused ({p.reason}); one post is testing whether it works again"


# --------------------------------------------------------------------------- reading


def get(s: Session, scope: str) -> Pause | None:
    return s.exec(select(Pause).where(Pause.scope == scope)).first()


def any_of(s: Session, scopes: list[str]) -> bool:
    """Whether any of ``scopes`` has a pause row (expired or not): one query for a target's scopes."""
    return s.execute(sa.select(Pause.id).where(Pause.scope.in_(scopes)).limit(1)).first() is not None


def list_all(s: Session) -> list[Pause]:
    return list(s.exec(select(Pause).order_by(Pause.scope)))


def held_counts(s: Session) -> dict[str, int]:
    """How many unfinished posts (and open targets) each scope holds."""
    counts: dict[str, int] = {}
    for scope, n in s.execute(sa.select(Post.paused_by, sa.func.count()).where(
            Post.paused_by.is_not(None), Post.status.in_(states.POST_ACTIVE)).group_by(Post.paused_by)):
        counts[scope] = counts.get(scope, 0) + n
    for scope, n in s.execute(sa.select(PostTarget.paused_by, sa.func.count()).where(
            PostTarget.paused_by.is_not(None), PostTarget.status.not_in(states.TARGET_TERMINAL))
            .group_by(PostTarget.paused_by)):
        counts[scope] = counts.get(scope, 0) + n
    return counts


# --------------------------------------------------------------------------- admission


@dataclass(frozen=True)
class Admission:
    """``pause`` is None: go ahead (``probing``: this call tests an expired pause; report its outcome).
    Otherwise the item waits until ``until`` with ``reason``."""

    pause: Pause | None = None
    until: datetime | None = None
    reason: str = ""
    probing: bool = False

    @property
    def held(self) -> bool:
        return self.pause is not None


def admit(s: Session, scope: str, owner: str, *, fingerprint: str | None = None, probe_seconds: float = 60,
          now: datetime | None = None) -> Admission:
    """May an item use ``scope`` now? Lifts a pause whose config fingerprint differs from ``fingerprint``,
    and lets one caller at a time probe an expired pause."""
    now = now or utcnow()
    p = get(s, scope)
    if p is None:
        return Admission()
    if p.fingerprint and fingerprint and p.fingerprint != fingerprint:
        lift(s, scope, "the configuration changed", now=now)
        return Admission()
    if p.until > now:
        return Admission(p, p.until, describe(p, now))
    probe_until = now + timedelta(seconds=probe_seconds)
    claimed = s.execute(
        sa.update(Pause).where(Pause.id == p.id)
        .where(sa.or_(Pause.probe_owner.is_(None), Pause.probe_expires_at < now))
        .values(probe_owner=owner, probe_expires_at=probe_until)
    ).rowcount
    if claimed == 1:
        log.info("pause.probe", extra=fields(scope=scope, owner=owner))
        return Admission(probing=True)
    s.refresh(p)
    return Admission(p, p.probe_expires_at or probe_until, describe(p, now))


# --------------------------------------------------------------------------- setting and lifting


def _delay(cfg: Config, error: StepError, failures: int) -> float:
    r = cfg.retry
    if install_wide(error) and error.retry_after is None:
        delay = r.max_delay_seconds  # a person has to act; probes and config changes lift it sooner
    else:
        delay = Backoff(r.base_delay_seconds, r.max_delay_seconds, 1).delay(failures)
    if error.retry_after:
        delay = max(delay, min(error.retry_after, MAX_PAUSE_SECONDS))
    return delay


def pause(s: Session, cfg: Config, scope: str, error: StepError, *, fingerprint: str | None = None,
          connection_id: int | None = None, now: datetime | None = None) -> Pause:
    """Pause ``scope`` because of ``error`` (or extend its pause). A fault reported after the pause
    expired (a failed probe) counts as a repeat and doubles the wait, up to the cap; faults reported
    concurrently by several workers count once."""
    now = now or utcnow()
    reason = str(error)
    fp = fingerprint if install_wide(error) else None
    p = get(s, scope)
    if p is None:
        try:
            with s.begin_nested():
                p = Pause(scope=scope, connection_id=connection_id, until=now, code=error.code or "",
                          reason=reason, failures=0, fingerprint=fp)
                s.add(p)
        except sa.exc.IntegrityError:  # another replica paused it at the same moment
            p = get(s, scope)
    s.refresh(p, with_for_update=not _is_sqlite(s))
    repeat = p.failures == 0 or p.until <= now
    failures = p.failures + 1 if repeat else p.failures
    until = now + timedelta(seconds=_delay(cfg, error, failures))
    p.failures = failures
    p.until = max(until, p.until) if not repeat else until
    p.code, p.reason, p.fingerprint = error.code or "", reason, fp
    p.probe_owner = p.probe_expires_at = None
    p.updated_at = now
    if connection_id is not None:
        p.connection_id = connection_id
    s.flush()
    log.warning("pause.set", extra=fields(scope=scope, until=p.until.isoformat(timespec="seconds"),
                                          failures=p.failures, code=p.code, reason=reason))
    return p


def _is_sqlite(s: Session) -> bool:
    return s.get_bind().dialect.name == "sqlite"


def lift(s: Session, scope: str, why: str, now: datetime | None = None) -> int:
    """Delete the pause and release what it holds (due now). Returns how many posts and targets."""
    now = now or utcnow()
    existed = s.execute(sa.delete(Pause).where(Pause.scope == scope)).rowcount
    released = s.execute(
        sa.update(Post).where(Post.paused_by == scope)
        .values(paused_by=None, next_attempt_at=now, last_error=None, updated_at=now)).rowcount
    targets = sa.select(PostTarget.post_id).where(PostTarget.paused_by == scope).scalar_subquery()
    s.execute(sa.update(Post).where(Post.id.in_(targets), Post.status.in_(states.POST_ACTIVE))
              .values(next_attempt_at=now, last_error=None, updated_at=now))
    released += s.execute(
        sa.update(PostTarget).where(PostTarget.paused_by == scope)
        .values(paused_by=None, next_attempt_at=now, last_error=None, updated_at=now)).rowcount
    if existed or released:
        log.info("pause.lifted", extra=fields(scope=scope, why=why, released=released))
    return released


def expire(s: Session, scope: str, now: datetime | None = None) -> bool:
    """End the wait now without lifting: the next item to arrive probes the scope (a person asked to
    retry). A provider's own Retry-After is still honoured: a rate limit is not cut short."""
    now = now or utcnow()
    p = get(s, scope)
    if p is None or p.until <= now or p.code == "rate_limited":
        return False
    p.until, p.probe_owner, p.probe_expires_at, p.updated_at = now, None, None, now
    return True


def hold_post(s: Session, post_id: int, scope: str, until: datetime, reason: str) -> None:
    """The post waits for ``scope`` without spending an attempt."""
    post = s.get(Post, post_id)
    post.next_attempt_at, post.paused_by, post.updated_at = until, scope, utcnow()
    if post.last_error != reason:
        post.last_error = reason
    _tell_quota(s, post.user_id, scope, reason)


def hold_target(s: Session, target_id: int, scope: str, until: datetime, reason: str) -> None:
    t = s.get(PostTarget, target_id)
    t.next_attempt_at, t.paused_by, t.updated_at = until, scope, utcnow()
    if t.last_error != reason:
        t.last_error = reason
    _tell_quota(s, s.get(Post, t.post_id).user_id, scope, reason)


def _tell_quota(s: Session, user_id: int, scope: str, reason: str) -> None:
    """A quota exhausted holds the owner's posts: tell them (once per scope and day; see services.notify)."""
    p = get(s, scope)
    if p is not None and p.code == "quota":
        from aiposter.services import notify

        notify.quota_exhausted(s, user_id, scope, reason)


def lift_stale(engine: Engine, cfg: Config) -> list[str]:
    """Lift captioner pauses whose config section changed since (run by every replica's housekeeping,
    so that fixing the key and restarting releases the waiting posts at once)."""
    lifted = []
    with session_scope(engine) as s:
        for p in s.exec(select(Pause).where(Pause.scope.like("captioner:%"), Pause.fingerprint.is_not(None))):
            current = captioner_fingerprint(cfg, p.scope.split(":", 1)[1])
            if current and current != p.fingerprint:
                lift(s, p.scope, "the configuration changed")
                lifted.append(p.scope)
    return lifted


def as_dict(p: Pause, held: int = 0) -> dict[str, Any]:
    def iso(dt: datetime | None) -> str | None:
        return dt.isoformat(timespec="seconds") if dt else None

    return {"scope": p.scope, "until": iso(p.until), "code": p.code, "reason": p.reason, "failures": p.failures,
            "probing": bool(p.probe_owner and p.probe_expires_at and p.probe_expires_at > utcnow()),
            "held": held, "since": iso(p.created_at)}
