"""Users: create, list, find, update and delete (with everything they own)."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, select
from zxcvbn import zxcvbn

from aiposter.config import Config
from aiposter.core.media import store_for
from aiposter.core.models import Post, User, utcnow
from aiposter.passwords import hash_password
from aiposter.services import Conflict, Invalid, NotFound, audit
from aiposter.services.audit import OPERATOR, Actor

MIN_PASSWORD = 10
# zxcvbn's score (0-4): 3 means "safely unguessable" (about 10^8 guesses or more). It knows the common
# password lists, dictionary words, names, keyboard walks, dates, repeats ("aaaaaaaaaa") and sequences.
MIN_PASSWORD_SCORE = 3
ZXCVBN_MAX = 72  # zxcvbn's own input limit; a password strong in its first 72 characters is strong


def validate_password(password: str, related: tuple[str, ...] = ()) -> None:
    """Refuse short passwords and easily guessed ones; ``related``: the user's email and name, which a
    password should not be built from."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password must be at least {MIN_PASSWORD} characters", field="password")
    inputs = [w for r in related if r for w in re.split(r"[@.\s_+-]+", r) + [r] if len(w) >= 3]
    result = zxcvbn(password[:ZXCVBN_MAX], user_inputs=inputs)
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result.get("feedback") or {}
        hint = feedback.get("warning") or next(iter(feedback.get("suggestions") or []), "")
        raise Invalid("password is too easy to guess" + (f" ({hint.rstrip('.')})" if hint else "")
                      + ": use a longer or less common one", field="password")


def normalize_email(email: str) -> str:
    """The address as stored, validated by email-validator (syntax only, no DNS lookups).

    Addresses must have a dotted domain (``a@b`` is refused); the one exception is ``localhost``, the
    domain of the quickstart owner (``owner@localhost``), an account that lives on this machine only."""
    text = email.strip()
    local, _, domain = text.rpartition("@")
    try:
        if domain.lower() == "localhost":
            validate_email(f"{local}@example.com", check_deliverability=False)
            return f"{local}@localhost".lower()
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(f"not an email address: {exc}", field="email") from None
    return checked.normalized.lower()


def create_user(s: Session, email: str, password: str | None = None, display_name: str = "",
                role: str = "user", actor: Actor = OPERATOR) -> User:
    email = normalize_email(email)
    if role not in ("user", "admin"):
        raise Invalid("role must be user or admin", field="role")
    if s.exec(select(User).where(User.email == email)).first():
        raise Conflict(f"a user with email {email} already exists", field="email")
    if password is not None:
        validate_password(password, (email, display_name))
    user = User(email=email, display_name=display_name or email.split("@")[0], role=role,
                password_hash=hash_password(password) if password else None)
    s.add(user)
    s.flush()
    audit.record(s, "user.created", actor, subject=user, detail=f"role {role}")
    return user


def set_password(s: Session, user: User, password: str, actor: Actor = OPERATOR) -> User:
    validate_password(password, (user.email, user.display_name))
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    own = actor.user is not None and actor.user.id == user.id
    audit.record(s, "password.changed" if own else "user.password_set", actor, subject=user)
    return user


def get_user_by_email(s: Session, email: str) -> User:
    user = s.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise NotFound(f"no user with email {email}")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.exec(select(User).order_by(User.id)))


def delete_user(s: Session, cfg: Config, user: User, actor: Actor = OPERATOR) -> dict[str, int]:
    """Remove the user and everything they own: sessions, connections and tokens, watches, files seen,
    posts, targets, events (all by ON DELETE CASCADE), their in-flight media files, and the copies of
    their posts in the local outbox (which lives on this machine, unlike a platform's copy)."""
    post_ids = list(s.exec(select(Post.id).where(Post.user_id == user.id)))
    counts = {"posts": len(post_ids)}
    user_id = user.id
    audit.forget_user(s, user)
    s.delete(user)
    s.flush()
    # Recorded by id only: the deleted account's email is not kept.
    own = actor.user is not None and actor.user.id == user_id
    event = audit.record(s, "account.deleted" if own else "user.deleted", actor,
                         detail=f"with {counts['posts']} post record(s)")
    event.subject_id = user_id
    if own:
        event.actor_email = None
    outbox = Path(cfg.publishers.outbox.directory)
    media = store_for(cfg)
    for pid in post_ids:
        media.delete_post(pid)
        for p in outbox.glob(f"post-{pid}-*"):
            p.unlink(missing_ok=True)
    return counts


def set_paused(s: Session, user: User, paused: bool) -> User:
    user.processing_paused = paused
    user.updated_at = utcnow()
    return user


def count_users(s: Session) -> int:
    return s.execute(sa.select(sa.func.count()).select_from(User)).scalar_one()
