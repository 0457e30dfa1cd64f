"""Signed, expiring media links: how a platform that fetches images itself (Instagram, Threads) gets the
prepared JPEG of a post in flight.

``GET``/``HEAD /media/<post>/<expires>/<signature>.jpg`` (the prepared image) and
``/media/<post>/<variant>/<expires>/<signature>.jpg`` (its copy fitted for one destination, e.g.
``instagram``), as made by :class:`aiposter.core.media.MediaUrls`. No login (the platform has none); the
HMAC signature is the credential. Every refusal is the same 404 (bad or foreign signature, expired link,
finished or deleted post, file gone), so a link says nothing about posts it was not made for, and there is
nothing to list.

``/media/probe/<expires>/<signature>.jpg`` serves a small sample JPEG for a minute-long signed link:
``aiposter config check`` fetches it through ``api.public_url`` as Meta does.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from aiposter.api.deps import Application
from aiposter.core import states
from aiposter.core.media import PROBE, post_key
from aiposter.core.models import Post, utcnow
from aiposter.db import read_one
from aiposter.services import NotFound

router = APIRouter(tags=["media"], include_in_schema=False)
CHUNK = 256 * 1024
_HEADERS = {
    # Private bytes kept only while the post is in flight: no shared cache may keep a copy, and the
    # fetcher gets them again from us if it needs to, while the link lives.
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
}


def _gone() -> NotFound:
    return NotFound("no such media (the link is wrong or expired, or the post is done)")


@functools.cache
def sample_jpeg() -> bytes:
    """What the probe link serves: a 64x64 JPEG, made once."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


# Declared before the post routes: "probe" is not a post id.
@router.api_route(f"/media/{PROBE}/{{expires}}/{{signature}}.jpg", methods=["GET", "HEAD"])
def probe(expires: int, signature: str, request: Request) -> Response:
    urls = request.app.state.media_urls
    if urls is None or not urls.verify(PROBE, expires, signature, utcnow()):
        raise _gone()
    data = sample_jpeg()
    headers = {**_HEADERS, "Content-Length": str(len(data))}
    return Response(b"" if request.method == "HEAD" else data, media_type="image/jpeg", headers=headers)


@router.api_route("/media/{post_id}/{expires}/{signature}.jpg", methods=["GET", "HEAD"])
def media(post_id: int, expires: int, signature: str, request: Request, app: Application) -> Response:
    return _serve(post_id, None, expires, signature, request, app)


@router.api_route("/media/{post_id}/{variant}/{expires}/{signature}.jpg", methods=["GET", "HEAD"])
def media_variant(post_id: int, variant: str, expires: int, signature: str, request: Request,
                  app: Application) -> Response:
    return _serve(post_id, variant, expires, signature, request, app)


def _serve(post_id: int, variant: str | None, expires: int, signature: str, request: Request, app) -> Response:
    urls = request.app.state.media_urls
    now = utcnow()
    if urls is None or not urls.verify(post_id, expires, signature, now, variant):
        raise _gone()
    # A read snapshot (no write gate, no SQLite write lock): the platforms fetch while the pipeline
    # writes, and a fetch queued behind the pipeline's transactions slowed every container step.
    post = read_one(app.engine, sa.select(Post.status, Post.media_key).where(Post.id == post_id))
    if post is None or post.status not in states.POST_ACTIVE or not post.media_key:
        raise _gone()
    key = post.media_key if variant is None else post_key(post_id, variant)  # signed: a valid name
    size = app.media.size(key)
    if size is None:
        raise _gone()
    headers = {**_HEADERS, "Content-Length": str(size),
               "Content-Disposition": f'inline; filename="{key}"'}
    if request.method == "HEAD":
        return Response(status_code=200, media_type="image/jpeg", headers=headers)
    try:
        fh = app.media.open(key)
    except FileNotFoundError:
        raise _gone() from None

    def body() -> Iterator[bytes]:
        with fh:
            while chunk := fh.read(CHUNK):
                yield chunk

    return StreamingResponse(body(), media_type="image/jpeg", headers=headers)
