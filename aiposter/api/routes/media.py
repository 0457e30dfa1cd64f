"""Signed, expiring media links: how a platform that fetches images itself (Instagram, Threads) gets the
prepared JPEG of a post in flight.

``GET``/``HEAD /media/<post>/<expires>/<signature>.jpg``, as made by :class:`aiposter.core.media.MediaUrls`.
No login (the platform has none); the HMAC signature is the credential. Every refusal is the same 404
(bad or foreign signature, expired link, finished or deleted post, file gone), so a link says nothing
about posts it was not made for, and there is nothing to list.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from aiposter.api.deps import Application
from aiposter.core import states
from aiposter.core.models import Post, utcnow
from aiposter.db import read_scope
from aiposter.services import NotFound

router = APIRouter(tags=["media"], include_in_schema=False)
CHUNK = 256 * 1024


def _gone() -> NotFound:
    return NotFound("no such media (the link is wrong or expired, or the post is done)")


@router.api_route("/media/{post_id}/{expires}/{signature}.jpg", methods=["GET", "HEAD"])
def media(post_id: int, expires: int, signature: str, request: Request, app: Application) -> Response:
    urls = request.app.state.media_urls
    now = utcnow()
    if urls is None or not urls.verify(post_id, expires, signature, now):
        raise _gone()
    # A read snapshot (no write gate, no SQLite write lock): the platforms fetch while the pipeline
    # writes, and a fetch queued behind the pipeline's transactions slowed every container step.
    with read_scope(app.engine) as conn:
        post = conn.execute(sa.select(Post.status, Post.media_key).where(Post.id == post_id)).first()
    if post is None or post.status not in states.POST_ACTIVE or not post.media_key:
        raise _gone()
    size = app.media.size(post.media_key)
    if size is None:
        raise _gone()
    headers = {
        "Content-Length": str(size),
        # Private bytes kept only while the post is in flight: no shared cache may keep a copy, and the
        # fetcher gets them again from us if it needs to, while the link lives.
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{post_id}.jpg"',
    }
    if request.method == "HEAD":
        return Response(status_code=200, media_type="image/jpeg", headers=headers)
    try:
        fh = app.media.open(post.media_key)
    except FileNotFoundError:
        raise _gone() from None

    def body() -> Iterator[bytes]:
        with fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return StreamingResponse(body(), media_type="image/jpeg", headers=headers)
