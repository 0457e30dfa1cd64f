"""Users: create, list, find, update and delete (with everything they own)."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.config import Config
from aiposter.core.media import store_for
from aiposter.core.models import Post, User, utcnow
from aiposter.passwords import hash_password
from aiposter.services import Conflict, Invalid, NotFound

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 10


def validate_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password must be at least {MIN_PASSWORD} characters", field="password")


def create_user(s: Session, email: str, password: str | None = None, display_name: str = "",
                role: str = "user") -> User:
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise Invalid(f"not an email address: {email!r}", field="email")
    if role not in ("user", "admin"):
        raise Invalid("role must be user or admin", field="role")
    if s.exec(select(User).where(User.email == email)).first():
        raise Conflict(f"a user with email {email} already exists", field="email")
    if password is not None:
        validate_password(password)
    user = User(email=email, display_name=display_name or email.split("@")[0], role=role,
                password_hash=hash_password(password) if password else None)
    s.add(user)
    s.flush()
    return user


def set_password(s: Session, user: User, password: str) -> User:
    validate_password(password)
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    return user


def get_user_by_email(s: Session, email: str) -> User:
    user = s.exec(select(User).where(User.email == email.strip().lower())).first()
    if user is None:
        raise NotFound(f"no user with email {email}")
    return user


def list_users(s: Session) -> list[User]:
    return list(s.exec(select(User).order_by(User.id)))


def delete_user(s: Session, cfg: Config, user: User) -> dict[str, int]:
    """Remove the user and everything they own: sessions, connections and tokens, watches, files seen,
    posts, targets, events (all by ON DELETE CASCADE), their in-flight media files, and the copies of
    their posts in the local outbox (which lives on this machine, unlike a platform's copy)."""
    post_ids = list(s.exec(select(Post.id).where(Post.user_id == user.id)))
    counts = {"posts": len(post_ids)}
    s.delete(user)
    s.flush()
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
