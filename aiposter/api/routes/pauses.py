"""Admins see and clear the pauses every replica respects (a captioner outage, a refused key, an account
that needs reconnecting...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from aiposter.api.deps import DB, Admin
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, PauseOut
from aiposter.services import pauses

router = APIRouter(prefix="/api/v1/pauses", tags=["pauses (admin)"], responses=responses(401, 403))


@router.get("", response_model=list[PauseOut])
def list_pauses(_: Admin, s: DB) -> list[PauseOut]:
    """Every pause in force or waiting for its probe, with its reason and the posts it holds."""
    return [PauseOut.model_validate(p) for p in pauses.list_pauses(s)]


@router.delete("/{scope}", response_model=Done, responses=responses(404, 422))
def clear_pause(scope: Annotated[str, Path(max_length=200, pattern=r"^[a-z_]+:[A-Za-z0-9_.-]+$",
                                           examples=["captioner:openai"])], _: Admin, s: DB) -> Done:
    """Lift the pause now: the posts and targets it held are due at once."""
    released = pauses.clear_pause(s, scope)
    return Done(detail=f"{scope} no longer paused; {released} post(s) or target(s) released")
