"""The caller's own account: profile, password, export, pause/resume, deletion."""

from __future__ import annotations

from fastapi import APIRouter

from aiposter.api.deps import DB, Application, CurrentActor, CurrentCaller, CurrentUser, Limiter
from aiposter.api.errors import responses
from aiposter.api.schemas import (
    Deleted,
    Done,
    ExportDocument,
    PasswordChange,
    PasswordConfirm,
    ProfileUpdate,
    UserOut,
)
from aiposter.services import account, auth, export, users

router = APIRouter(prefix="/api/v1/me", tags=["me"], responses=responses(401))


@router.get("", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch("", response_model=UserOut, responses=responses(422))
def update_me(body: ProfileUpdate, user: CurrentUser, s: DB) -> UserOut:
    """Change the display name, or the brand voice and default hashtags LLM captions use."""
    account.update_profile(s, user, body.display_name, body.brand_voice, body.default_hashtags)
    return UserOut.model_validate(user)


@router.post("/password", response_model=Done, responses=responses(403, 422, 429))
def change_password(body: PasswordChange, caller: CurrentCaller, actor: CurrentActor, limiter: Limiter,
                    s: DB) -> Done:
    """Set a new password. Every other session is logged out; this one stays. Wrong current passwords are
    rate-limited like logins (HTTP 429 with Retry-After)."""
    n = auth.change_password(s, limiter, actor, caller.user, body.current_password, body.new_password,
                             keep=caller.session)
    return Done(detail=f"password changed; {n} other session(s) logged out")


@router.get("/export", response_model=ExportDocument)
def export_me(user: CurrentUser, actor: CurrentActor, s: DB, app: Application) -> dict:
    """Everything stored about you, as one JSON document (no passwords, tokens or credentials)."""
    return export.export_user(s, user, actor, app.keyring)


@router.post("/pause", response_model=UserOut)
def pause(user: CurrentUser, s: DB) -> UserOut:
    """Stop all processing for this account (no polling, captioning or publishing) until resumed."""
    return UserOut.model_validate(users.set_paused(s, user, True))


@router.post("/resume", response_model=UserOut)
def resume(user: CurrentUser, s: DB) -> UserOut:
    return UserOut.model_validate(users.set_paused(s, user, False))


@router.delete("", response_model=Deleted, responses=responses(403, 422, 429))
def delete_me(body: PasswordConfirm, user: CurrentUser, actor: CurrentActor, limiter: Limiter, s: DB,
              app: Application) -> Deleted:
    """Delete this account and everything it owns: sessions, connections and their tokens, watches,
    posts, their targets and history, and any stored media. Confirm with the password (wrong ones are
    rate-limited like logins)."""
    counts = account.delete_own_account(s, app.cfg, limiter, actor, user, body.password)
    return Deleted(posts=counts["posts"])
