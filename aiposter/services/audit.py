"""The audit log: who did what, when, and from where, for the events an operator must be able to reconstruct.

Recorded: logins (succeeded, failed, locked out), password changes and failed password checks, user
administration (created, password set, disabled, enabled, deleted), connections added and removed, data
exports and account deletions. Readable by admins (``GET /api/v1/audit``, ``aiposter audit list``), kept
``security.audit_retention_days`` (housekeeping purges older rows).

When a user is deleted, the rows that name only them go with them; rows that also name someone else (the
admin who disabled them, say) stay, with the deleted user's email erased and only their former id left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.core.models import AuditEvent, User, utcnow
from aiposter.logs import fields

log = logging.getLogger("aiposter.audit")


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where. ``user=None``: the operator, through the CLI on this machine."""

    user: User | None = None
    client: str = "cli"


OPERATOR = Actor()


def record(s: Session, action: str, actor: Actor = OPERATOR, subject: User | None = None,
           subject_email: str | None = None, detail: str = "") -> AuditEvent:
    """Add an audit row to the session's unit of work (the caller commits it with the change it records)."""
    who = actor.user
    event = AuditEvent(action=action, actor_id=who.id if who else None, actor_email=who.email if who else None,
                       subject_id=subject.id if subject else None,
                       subject_email=(subject.email if subject else subject_email or None),
                       client=(actor.client or "")[:200], detail=detail[:2000])
    s.add(event)
    log.info(f"audit.{action}", extra=fields(actor=event.actor_email or ("operator" if who is None else who.id),
                                             subject=event.subject_email or event.subject_id,
                                             client=event.client, detail=detail or None))
    return event


def list_events(s: Session, limit: int = 100, before_id: int | None = None, action: str | None = None,
                user_id: int | None = None) -> list[AuditEvent]:
    """Newest first. ``user_id``: events where that user acted or was acted on."""
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(AuditEvent.id < before_id)
    if action:
        q = q.where(AuditEvent.action == action)
    if user_id is not None:
        q = q.where(sa.or_(AuditEvent.actor_id == user_id, AuditEvent.subject_id == user_id))
    return list(s.exec(q))


def event_dict(e: AuditEvent) -> dict:
    return {"id": e.id, "at": e.at.isoformat(timespec="seconds"), "action": e.action, "actor_id": e.actor_id,
            "actor_email": e.actor_email, "subject_id": e.subject_id, "subject_email": e.subject_email,
            "client": e.client, "detail": e.detail}


def forget_user(s: Session, user: User) -> None:
    """Called when a user is deleted: remove the rows naming only them, erase their email elsewhere."""
    only_them = sa.or_(
        sa.and_(AuditEvent.actor_id == user.id,
                sa.or_(AuditEvent.subject_id.is_(None), AuditEvent.subject_id == user.id)),
        sa.and_(AuditEvent.subject_id == user.id, AuditEvent.actor_id.is_(None)),
        sa.and_(AuditEvent.subject_email == user.email, AuditEvent.actor_id.is_(None)),
    )
    s.execute(sa.delete(AuditEvent).where(only_them))
    s.execute(sa.update(AuditEvent).where(AuditEvent.actor_id == user.id).values(actor_email=None))
    s.execute(sa.update(AuditEvent).where(sa.or_(AuditEvent.subject_id == user.id,
                                                 AuditEvent.subject_email == user.email))
              .values(subject_email=None))


def purge(s: Session, retention_days: int, now=None) -> int:
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    return s.execute(sa.delete(AuditEvent).where(AuditEvent.at < cutoff)).rowcount
