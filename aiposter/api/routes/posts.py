"""Posts: what happened to each file, retrying a failed target, deleting a record."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic_core import to_json

from aiposter.api.deps import DB, Application, CurrentActor, CurrentUser, Reader
from aiposter.api.errors import responses
from aiposter.api.schemas import (
    Done,
    PathId,
    PostDetail,
    PostPage,
    PostState,
    ReviewApprove,
    ReviewEdit,
    ReviewOut,
    ReviewRegenerate,
    ReviewReject,
    RowId,
)
from aiposter.db import read_scope
from aiposter.services import posts, review

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


# --------------------------------------------------------------------------- review and schedule


def _detail(s, p) -> PostDetail:
    s.flush()
    return PostDetail.model_validate(posts.post_dict(s, p, detail=True))


@router.get("/{post_id}/review", response_model=ReviewOut, responses=responses(404))
def get_review(post_id: PathId, user: CurrentUser, s: DB) -> ReviewOut:
    """What would be published: each target's caption (with its length and limit), hashtags, alt text, and
    a link to the image preview."""
    return ReviewOut.model_validate(review.review_dict(s, posts.get_post(s, post_id, user)))


@router.get("/{post_id}/image", responses={**responses(404), 200: {"content": {"image/jpeg": {}}}},
            response_class=Response)
def get_image(post_id: PathId, user: CurrentUser, s: DB, app: Application) -> Response:
    """The prepared image (as it will be published), to its owner only, while the post is in flight."""
    return image_response(posts.open_image(app.media, posts.get_post(s, post_id, user)))


def image_response(fh) -> StreamingResponse:
    """A post's prepared image streamed from an open file, private to the one who asked (the web's review
    page serves it the same way)."""

    def body():
        with fh:
            while chunk := fh.read(256 * 1024):
                yield chunk
    return StreamingResponse(body(), media_type="image/jpeg",
                             headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})


@router.patch("/{post_id}/review", response_model=ReviewOut, responses=responses(404, 409))
def edit_review(post_id: PathId, body: ReviewEdit, user: CurrentUser, actor: CurrentActor, s: DB) -> ReviewOut:
    """Edit captions (per target id, or per platform) and the alt text. An edit over a platform's limit is
    a 422 naming the platform, the limit and the count."""
    p = review.edit(s, posts.get_post(s, post_id, user), actor, captions=body.captions, alt_text=body.alt_text)
    s.flush()
    return ReviewOut.model_validate(review.review_dict(s, p))


@router.post("/{post_id}/regenerate", response_model=PostDetail, responses=responses(404, 409))
def regenerate(post_id: PathId, body: ReviewRegenerate, user: CurrentUser, actor: CurrentActor,
               s: DB) -> PostDetail:
    """New captions from the captioner, with an optional instruction; the post returns to review."""
    return _detail(s, review.regenerate(s, posts.get_post(s, post_id, user), actor, body.instruction))


@router.post("/{post_id}/approve", response_model=PostDetail, responses=responses(404, 409))
def approve(post_id: PathId, body: ReviewApprove, user: CurrentUser, actor: CurrentActor, s: DB) -> PostDetail:
    """Approve the whole post, or only some targets (the others are skipped); it then publishes (under the
    watch's schedule) exactly the text shown in review."""
    return _detail(s, review.approve(s, posts.get_post(s, post_id, user), actor, body.target_ids))


@router.post("/{post_id}/reject", response_model=PostDetail, responses=responses(404, 409))
def reject(post_id: PathId, body: ReviewReject, user: CurrentUser, actor: CurrentActor, s: DB,
           app: Application) -> PostDetail:
    """Nothing is published, and the image is deleted at once."""
    return _detail(s, review.reject(s, posts.get_post(s, post_id, user), actor, app.media, body.reason))


@router.post("/{post_id}/publish-now", response_model=PostDetail, responses=responses(404, 409))
def publish_now(post_id: PathId, user: CurrentUser, actor: CurrentActor, s: DB) -> PostDetail:
    """Skip the watch's posting windows and daily cap for this post (min_spacing_seconds still holds)."""
    return _detail(s, review.publish_now(s, posts.get_post(s, post_id, user), actor))
