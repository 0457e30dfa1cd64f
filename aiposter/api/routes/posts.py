"""Posts: what happened to each file, retrying a failed target, deleting a record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic_core import to_json

from aiposter.api.deps import DB, Application, CurrentUser, Reader
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, PathId, PostDetail, PostPage, PostState, RowId
from aiposter.db import read_scope
from aiposter.services import posts

router = APIRouter(prefix="/api/v1/posts", tags=["posts"], responses=responses(401, 422))


@router.get("", response_model=PostPage)
async def list_posts(reader: Reader, request: Request,
                     status: Annotated[PostState | None, Query()] = None,
                     watch_id: Annotated[RowId | None, Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     cursor: Annotated[RowId | None, Query(description="next_cursor of the previous page")] = None,
                     ) -> Response:
    """Newest first, one page at a time."""
    with read_scope(request.app.state.application.engine) as conn:
        items = posts.page_dicts(conn, reader.user_id, status=status, watch_id=watch_id, limit=limit,
                                 before_id=cursor)
    # The dicts are PostOut's fields as it renders them, straight from typed columns: serialised by
    # pydantic-core without a validation pass (returning a Response skips FastAPI's response_model pass).
    page = {"items": items, "next_cursor": items[-1]["id"] if len(items) == limit else None}
    return Response(to_json(page), media_type="application/json")


@router.get("/{post_id}", response_model=PostDetail, responses=responses(404))
def get_post(post_id: PathId, user: CurrentUser, s: DB) -> PostDetail:
    """Captions, per-target status with platform ids and errors, token usage, and the full history."""
    return PostDetail.model_validate(posts.post_dict(s, posts.get_post(s, post_id, user), detail=True))


@router.post("/{post_id}/retry", response_model=PostDetail, responses=responses(404, 409, 422))
def retry_post(post_id: PathId, user: CurrentUser, s: DB) -> PostDetail:
    """A waiting post becomes due now (a pause holding it is tested by this post; a provider's own
    Retry-After is still honoured); a finished post sends its failed and skipped targets again."""
    p = posts.get_post(s, post_id, user)
    posts.retry_post(s, p)
    s.flush()
    return PostDetail.model_validate(posts.post_dict(s, p, detail=True))


@router.post("/{post_id}/targets/{target_id}/retry", response_model=PostDetail, responses=responses(404, 422))
def retry_target(post_id: PathId, target_id: PathId, user: CurrentUser, s: DB) -> PostDetail:
    """Send a failed or skipped target again; a waiting target becomes due now."""
    p = posts.get_post(s, post_id, user)
    posts.retry_target(s, p, target_id)
    s.flush()
    return PostDetail.model_validate(posts.post_dict(s, p, detail=True))


@router.delete("/{post_id}", response_model=Done, responses=responses(404))
def delete_post(post_id: PathId, user: CurrentUser, s: DB, app: Application) -> Done:
    posts.delete_post(s, posts.get_post(s, post_id, user), app.media)
    return Done(detail=f"post {post_id} deleted")
