"""Posts: what happened to each file, retrying a failed target, deleting a record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiposter.api.deps import DB, Application, CurrentUser
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, PathId, PostDetail, PostPage, PostState, RowId
from aiposter.services import posts

router = APIRouter(prefix="/api/v1/posts", tags=["posts"], responses=responses(401, 422))


@router.get("", response_model=PostPage)
def list_posts(user: CurrentUser, s: DB,
               status: Annotated[PostState | None, Query()] = None,
               watch_id: Annotated[RowId | None, Query()] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50,
               cursor: Annotated[RowId | None, Query(description="next_cursor of the previous page")] = None,
               ) -> PostPage:
    """Newest first, one page at a time."""
    rows = posts.list_posts(s, user, status=status, watch_id=watch_id, limit=limit, before_id=cursor)
    return PostPage(items=[posts.post_dict(s, p) for p in rows],
                    next_cursor=rows[-1].id if len(rows) == limit else None)


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
