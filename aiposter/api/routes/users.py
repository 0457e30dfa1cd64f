"""Admins manage users."""

from __future__ import annotations

from fastapi import APIRouter, status

from aiposter.api.deps import DB, Admin, Application, CurrentActor
from aiposter.api.errors import responses
from aiposter.api.schemas import Deleted, PathId, UserCreate, UserOut
from aiposter.core.models import User
from aiposter.services import Conflict, NotFound, account, users

router = APIRouter(prefix="/api/v1/users", tags=["users (admin)"], responses=responses(401, 403))


def _get(s, user_id: int) -> User:
    u = s.get(User, user_id)
    if u is None:
        raise NotFound(f"no user {user_id}")
    return u


def _not_self(admin: User, user: User, action: str) -> None:
    if admin.id == user.id:
        raise Conflict(f"admins cannot {action} their own account here; use /api/v1/me")


@router.get("", response_model=list[UserOut])
def list_users(_: Admin, s: DB) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in users.list_users(s)]


@router.post("", response_model=UserOut, status_code=status.HTTP_201_CREATED, responses=responses(409, 422))
def create_user(body: UserCreate, _: Admin, actor: CurrentActor, s: DB) -> UserOut:
    u = users.create_user(s, body.email, body.password, display_name=body.display_name, role=body.role,
                          actor=actor)
    return UserOut.model_validate(u)


@router.get("/{user_id}", response_model=UserOut, responses=responses(404, 422))
def get_user(user_id: PathId, _: Admin, s: DB) -> UserOut:
    return UserOut.model_validate(_get(s, user_id))


@router.post("/{user_id}/disable", response_model=UserOut, responses=responses(404, 409, 422))
def disable_user(user_id: PathId, admin: Admin, actor: CurrentActor, s: DB) -> UserOut:
    """Block the account: it cannot log in, its sessions stop working and its watches stop."""
    u = _get(s, user_id)
    _not_self(admin, u, "disable")
    return UserOut.model_validate(account.set_disabled(s, u, True, actor))


@router.post("/{user_id}/enable", response_model=UserOut, responses=responses(404, 422))
def enable_user(user_id: PathId, _: Admin, actor: CurrentActor, s: DB) -> UserOut:
    return UserOut.model_validate(account.set_disabled(s, _get(s, user_id), False, actor))


@router.delete("/{user_id}", response_model=Deleted, responses=responses(404, 409, 422))
def delete_user(user_id: PathId, admin: Admin, actor: CurrentActor, s: DB, app: Application) -> Deleted:
    """Delete the user and everything they own (like `aiposter user delete`)."""
    u = _get(s, user_id)
    _not_self(admin, u, "delete")
    return Deleted(posts=users.delete_user(s, app.cfg, u, actor)["posts"])
