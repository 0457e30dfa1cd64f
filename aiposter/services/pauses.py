"""Pauses, for admins: what is paused install-wide (captioners, destinations, accounts), for how long and
why, and how many posts each holds; clearing one releases its posts at once (see core/pauses.py)."""

from __future__ import annotations

from sqlmodel import Session

from aiposter.core import pauses
from aiposter.services import NotFound


def list_pauses(s: Session) -> list[dict]:
    held = pauses.held_counts(s)
    return [pauses.as_dict(p, held.get(p.scope, 0)) for p in pauses.list_all(s)]


def clear_pause(s: Session, scope: str) -> int:
    """Lift the pause on ``scope`` now; returns how many posts and targets it released."""
    if pauses.get(s, scope) is None:
        raise NotFound(f"nothing is paused as {scope!r}")
    return pauses.lift(s, scope, "cleared by an admin")
