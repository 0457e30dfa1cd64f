"""Watches: folders polled for new images, and where their posts go."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic_core import to_json

from aiposter.api.deps import DB, Application, CurrentUser, Reader
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, PathId, WatchCreate, WatchFields, WatchOut, WatchUpdate
from aiposter.db import read_scope
from aiposter.services import watches

router = APIRouter(prefix="/api/v1/watches", tags=["watches"], responses=responses(401))
ONE = responses(404, 422)


def _spec(body: WatchFields) -> watches.WatchSpec:
    return watches.WatchSpec(**body.model_dump(exclude_none=True))


def _out(s, w) -> WatchOut:
    return WatchOut.model_validate(watches.watch_dict(s, w))


@router.get("", response_model=list[WatchOut])
async def list_watches(reader: Reader, request: Request) -> Response:
    with read_scope(request.app.state.application.engine) as conn:
        rows = watches.list_dicts(conn, reader.user_id)
    # WatchOut's fields as it renders them, straight from typed columns: serialised by pydantic-core without
    # a validation pass (returning a Response skips FastAPI's response_model pass).
    return Response(to_json(rows), media_type="application/json")


@router.post("", response_model=WatchOut, status_code=status.HTTP_201_CREATED, responses=responses(422))
def create_watch(body: WatchCreate, user: CurrentUser, s: DB, app: Application) -> WatchOut:
    """Local folders must lie under the server's `sources.local_roots`. A Drive watch (`source`
    google_drive, `source_connection_id`) takes a folder id or a pasted folder link; the folder is checked
    (exists, is a folder, readable by that account) and its current files become the baseline."""
    return _out(s, watches.create_watch(s, app.cfg, user, _spec(body), keyring=app.keyring))


@router.get("/{watch_id}", response_model=WatchOut, responses=ONE)
def get_watch(watch_id: PathId, user: CurrentUser, s: DB) -> WatchOut:
    return _out(s, watches.get_watch(s, watch_id, user))


@router.patch("/{watch_id}", response_model=WatchOut, responses=ONE)
def update_watch(watch_id: PathId, body: WatchUpdate, user: CurrentUser, s: DB, app: Application) -> WatchOut:
    """Change some fields; the ones left out keep their value."""
    w = watches.get_watch(s, watch_id, user)
    return _out(s, watches.update_watch(s, app.cfg, user, w, _spec(body), keyring=app.keyring))


@router.delete("/{watch_id}", response_model=Done, responses=ONE)
def delete_watch(watch_id: PathId, user: CurrentUser, s: DB, app: Application) -> Done:
    """Delete the watch with its post records."""
    watches.delete_watch(s, watches.get_watch(s, watch_id, user), app.media, app.cfg, app.keyring)
    return Done(detail=f"watch {watch_id} deleted")


def _set_enabled(s, app, user, watch_id: int, enabled: bool) -> WatchOut:
    w = watches.get_watch(s, watch_id, user)
    return _out(s, watches.update_watch(s, app.cfg, user, w, watches.WatchSpec(enabled=enabled),
                                        keyring=app.keyring))


@router.post("/{watch_id}/pause", response_model=WatchOut, responses=ONE)
def pause_watch(watch_id: PathId, user: CurrentUser, s: DB, app: Application) -> WatchOut:
    return _set_enabled(s, app, user, watch_id, False)


@router.post("/{watch_id}/resume", response_model=WatchOut, responses=ONE)
def resume_watch(watch_id: PathId, user: CurrentUser, s: DB, app: Application) -> WatchOut:
    return _set_enabled(s, app, user, watch_id, True)


@router.post("/{watch_id}/poll", response_model=WatchOut, responses=ONE)
def poll_now(watch_id: PathId, user: CurrentUser, s: DB) -> WatchOut:
    """Poll at the scheduler's next tick instead of waiting for the interval."""
    return _out(s, watches.poll_now(s, watches.get_watch(s, watch_id, user)))
