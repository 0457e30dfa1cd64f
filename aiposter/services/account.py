"""A user's own account: profile, disabling, and deletion with everything they own."""

from __future__ import annotations

from sqlmodel import Session

from aiposter.config import Config
from aiposter.core.models import User, utcnow
from aiposter.services import Invalid, audit
from aiposter.services.audit import OPERATOR, Actor
from aiposter.services.auth import check_password, revoke_sessions
from aiposter.services.limits import LoginLimiter
from aiposter.services.users import delete_user

MAX_HASHTAGS = 30


def update_profile(s: Session, user: User, display_name: str | None = None, brand_voice: str | None = None,
                   default_hashtags: list[str] | None = None) -> User:
    if display_name is not None:
        if not display_name.strip():
            raise Invalid("display_name must not be empty", field="display_name")
        user.display_name = display_name.strip()
    if brand_voice is not None:
        user.brand_voice = brand_voice
    if default_hashtags is not None:
        tags = [t.strip().lstrip("#") for t in default_hashtags if t.strip().lstrip("#")]
        if len(tags) > MAX_HASHTAGS:
            raise Invalid(f"at most {MAX_HASHTAGS} default hashtags", field="default_hashtags")
        if any(any(c.isspace() for c in t) for t in tags):
            raise Invalid("a hashtag cannot contain spaces", field="default_hashtags")
        user.default_hashtags = list(dict.fromkeys(tags))
    user.updated_at = utcnow()
    return user


def set_disabled(s: Session, user: User, disabled: bool, actor: Actor = OPERATOR) -> User:
    """Disable (or re-enable) an account; disabling also ends all its sessions."""
    user.disabled = disabled
    user.updated_at = utcnow()
    if disabled:
        revoke_sessions(s, user)
    audit.record(s, "user.disabled" if disabled else "user.enabled", actor, subject=user)
    return user


def delete_own_account(s: Session, cfg: Config, limiter: LoginLimiter, actor: Actor, user: User,
                       password: str) -> dict[str, int]:
    """Erase the account (the user confirms with their password) and everything it owns."""
    check_password(s, limiter, actor, user, password)
    return delete_user(s, cfg, user, actor)
