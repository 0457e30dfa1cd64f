"""Posts: list, show (with per-target status and history), retry a target, delete a record."""

from __future__ import annotations

import functools
from datetime import UTC

import sqlalchemy as sa
from sqlmodel import Session, select
from sqlmodel.sql.sqltypes import AutoString

from aiposter.core import pauses, states
from aiposter.core.media import MediaStore
from aiposter.core.models import Post, PostEvent, PostTarget, User, Watch, utcnow
from aiposter.core.pipeline import add_event
from aiposter.services import Conflict, Invalid, NotFound, get_owned
from aiposter.services.review import caption_of


def list_posts(s: Session, user: User | None = None, status: str | None = None, watch_id: int | None = None,
               limit: int = 50, before_id: int | None = None, search: str | None = None) -> list[Post]:
    """Newest first; ``before_id`` is the cursor (the last id of the previous page). ``search``: part of
    the file or folder name, any case."""
    if status is not None and status not in states.POST_STATES:
        raise Invalid(f"unknown status {status!r} (known: {', '.join(states.POST_STATES)})", field="status")
    q = select(Post).order_by(Post.id.desc()).limit(max(1, min(limit, 500)))
    if user is not None:
        q = q.where(Post.user_id == user.id)
    if status:
        q = q.where(Post.status == status)
    if watch_id is not None:
        q = q.where(Post.watch_id == watch_id)
    if before_id is not None:
        q = q.where(Post.id < before_id)
    if search:
        like = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = q.where(sa.or_(Post.file_name.ilike(like, escape="\\"), Post.folder_name.ilike(like, escape="\\")))
    return list(s.exec(q))


def _plain(col):
    """A string column read as plain ``String``: SQLModel's AutoString is a TypeDecorator that calls Python
    for every value of every row; the read endpoints need the text as the driver returns it."""
    return sa.type_coerce(col, sa.String()).label(col.key) if isinstance(col.type, AutoString) else col


@functools.lru_cache(maxsize=64)
def _page_query(dialect: str, status: bool, watch: bool, before: bool, limit: int) -> sa.Select:
    """The list query, built once per shape (building a Select costs more than running it). On SQLite the
    timestamps are read as the stored UTC text (see :func:`json_time`): parsing them into datetimes and
    back was the largest cost left in the endpoint."""
    c = Post.__table__.c

    def ts(col):
        return sa.type_coerce(col, sa.String()).label(col.key) if dialect == "sqlite" else col

    q = (sa.select(c.id, _plain(c.watch_id), _plain(c.file_name), _plain(c.folder_name), _plain(c.source_ref),
                   _plain(c.status), _plain(c.last_error), ts(c.next_attempt_at), ts(c.created_at),
                   ts(c.finished_at))
         .where(c.user_id == sa.bindparam("uid")).order_by(c.id.desc()).limit(limit))
    if status:
        q = q.where(c.status == sa.bindparam("status"))
    if watch:
        q = q.where(c.watch_id == sa.bindparam("watch_id"))
    if before:
        q = q.where(c.id < sa.bindparam("before_id"))
    return q


def page_dicts(conn: sa.Connection, user_id: int, status: str | None = None, watch_id: int | None = None,
               limit: int = 50, before_id: int | None = None) -> list[dict]:
    """:func:`list_posts` + :func:`post_dict` for the list endpoint, ready for JSON (``PostOut``'s fields and
    rendering), without building ORM objects: one Core query of only the listed columns (same filters,
    same order). ``waiting_for`` of an unfinished post needs its user, watch and pauses: those few rows go
    through an ORM session on the same snapshot."""
    if status is not None and status not in states.POST_STATES:
        raise Invalid(f"unknown status {status!r} (known: {', '.join(states.POST_STATES)})", field="status")
    limit = max(1, min(limit, 500))
    q = _page_query(conn.dialect.name, bool(status), watch_id is not None, before_id is not None, limit)
    params = {"uid": user_id, "status": status, "watch_id": watch_id, "before_id": before_id}
    rows = conn.execute(q, {k: v for k, v in params.items() if v is not None}).all()
    # Rows unpacked as plain tuples: a Row's attribute access costs a few microseconds each (14 a row, 50
    # rows a page: it was the endpoint's largest cost after the query).
    items, active = [], []
    for pid, wid, file_name, folder_name, source_ref, status_, last_error, next_at, created, finished in rows:
        live = status_ in states.POST_ACTIVE
        items.append({"id": pid, "watch_id": wid, "file_name": file_name, "folder_name": folder_name,
                      "source_ref": source_ref, "status": status_, "last_error": last_error, "waiting_for": None,
                      "next_attempt_at": json_time(next_at) if live else None, "created_at": json_time(created),
                      "finished_at": json_time(finished)})
        if live:
            active.append(items[-1])
    if active:
        with Session(bind=conn) as s:
            for d in active:
                d["waiting_for"] = waiting_for(s, s.get(Post, d["id"]))
    return items


def json_time(dt) -> str | None:
    """A UTC time as the API's response models render it (seconds, ``Z``): lets the read endpoints serialise
    plain dicts without a validation pass that would only re-parse these strings. ``dt`` is an aware
    datetime, or SQLite's stored text (``YYYY-MM-DD HH:MM:SS[.ffffff]``, always UTC: see core/models.py)."""
    if not dt:
        return None
    if isinstance(dt, str):
        return f"{dt[:10]}T{dt[11:19]}Z"
    return dt.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def get_post(s: Session, post_id: int, user: User | None = None) -> Post:
    return get_owned(s, Post, post_id, user, "post")


def targets(s: Session, post: Post) -> list[PostTarget]:
    return list(s.exec(select(PostTarget).where(PostTarget.post_id == post.id).order_by(PostTarget.id)))


def events(s: Session, post: Post) -> list[PostEvent]:
    return list(s.exec(select(PostEvent).where(PostEvent.post_id == post.id).order_by(PostEvent.id)))


def retry_target(s: Session, post: Post, target_id: int) -> PostTarget:
    """Send a failed (or skipped) target again: the post goes back to the step it needs. A target that is
    waiting (a retry time, or a pause holding it) becomes due now instead."""
    t = s.get(PostTarget, target_id)
    if t is None or t.post_id != post.id:
        raise NotFound(f"no target {target_id} on post {post.id}")
    if t.status == states.T_PENDING and post.status in states.POST_ACTIVE:
        _due_now(s, post, [t])
        return t
    if t.status not in (states.T_FAILED, states.T_SKIPPED):
        raise Invalid(f"target {target_id} is {t.status}; only failed, skipped or waiting targets can be "
                      "retried", field="target_id")
    t.status, t.attempts, t.next_attempt_at, t.updated_at = states.T_PENDING, 0, utcnow(), utcnow()
    # A new attempt: nothing of the failed one (its container, its wait) carries over.
    t.handle, t.container_id, t.step_started_at, t.attempt_started_at, t.pending_since = None, None, None, None, None
    # The image was deleted when the post finished; fetch it again (the pipeline also does, should a
    # stored image have gone missing). Captions are kept.
    post.status = states.DETECTED if post.media_key is None else (
        states.CAPTIONED if post.captions else states.DOWNLOADED)
    post.step_attempts, post.next_attempt_at, post.finished_at = 0, utcnow(), None
    post.last_error = None
    add_event(s, post.id, states.T_PENDING, f"{t.platform}: retry requested", t.id)
    return t


def retry_post(s: Session, post: Post) -> list[PostTarget]:
    """Retry what can be retried now. An unfinished post that waits (for a retry time, or held by a
    pause) becomes due now: a pause holding it is tested by this post at once (a provider's own
    Retry-After is still honoured). A finished post sends its failed and skipped targets again."""
    ts = targets(s, post)
    if post.status in states.POST_ACTIVE:
        if post.lease_owner and post.lease_expires_at and post.lease_expires_at > utcnow():
            raise Conflict("the post is being processed right now; try again in a moment")
        _due_now(s, post, [t for t in ts if t.status == states.T_PENDING])
        return []
    again = [t for t in ts if t.status in (states.T_FAILED, states.T_SKIPPED)]
    if not again:
        raise Invalid(f"post {post.id} is {post.status} and has no failed or skipped target to retry")
    return [retry_target(s, post, t.id) for t in again]


def _due_now(s: Session, post: Post, waiting: list[PostTarget]) -> None:
    now = utcnow()
    scopes = {post.paused_by} | {t.paused_by for t in waiting}
    for scope in sorted(x for x in scopes if x):
        pauses.expire(s, scope, now)
    for t in waiting:
        t.next_attempt_at, t.paused_by, t.updated_at = now, None, now
    post.next_attempt_at, post.paused_by, post.updated_at = now, None, now
    add_event(s, post.id, post.status, "retry requested: due now")


def delete_post(s: Session, post: Post, media: MediaStore) -> None:
    if post.status in states.POST_ACTIVE and post.lease_owner:
        raise Conflict("the post is being processed right now; try again in a moment")
    s.delete(post)
    s.flush()
    media.delete_post(post.id)


def counts_by_status(s: Session, user: User | None = None) -> dict[str, int]:
    q = sa.select(Post.status, sa.func.count()).group_by(Post.status)
    if user is not None:
        q = q.where(Post.user_id == user.id)
    return dict(s.execute(q).all())


def in_flight(s: Session) -> int:
    """How many posts are not finished yet, across all users (the instance's queue depth)."""
    return s.execute(sa.select(sa.func.count()).select_from(Post)
                     .where(Post.status.in_(states.POST_ACTIVE))).scalar_one()


def open_image(media: MediaStore, post: Post):
    """The prepared image's bytes (a file object) while the post is in flight; NotFound once it is done."""
    if post.status not in states.POST_ACTIVE or not post.media_key or media.size(post.media_key) is None:
        raise NotFound(f"post {post.id} has no image now (it is kept only while the post is in flight)")
    try:
        return media.open(post.media_key)
    except FileNotFoundError:
        raise NotFound(f"post {post.id} has no image now") from None


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


def waiting_for(s: Session, p: Post, now=None) -> str | None:
    """Why an unfinished post is not moving right now, in words; None once it is finished."""
    if p.status not in states.POST_ACTIVE:
        return None
    now = now or utcnow()
    if p.lease_owner and p.lease_expires_at and p.lease_expires_at > now:
        return f"being processed now (by {p.lease_owner})"
    user, watch = s.get(User, p.user_id), s.get(Watch, p.watch_id)
    if user.disabled:
        return "the account is disabled"
    if user.processing_paused:
        return "processing is paused for this account (resume it to continue)"
    if not watch.enabled:
        return "its watch is paused (resume the watch to continue)"
    if p.status == states.AWAITING_REVIEW:
        return (f"waiting for review (approve or reject it) until "
                f"{p.review_expires_at or p.next_attempt_at:%Y-%m-%d %H:%M} UTC")
    if p.next_attempt_at > now:
        return (_held_by(s, p, now) or p.last_error
                or f"next step scheduled at {p.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC")
    return "queued: its next step is due now"


def _held_by(s: Session, p: Post, now) -> str | None:
    """The pause holding the post (or one of its open targets), in words."""
    scopes = [p.paused_by] if p.paused_by else []
    if p.status in (states.CAPTIONED, states.PUBLISHING):
        scopes += [t.paused_by for t in targets(s, p) if t.paused_by and t.status not in states.TARGET_TERMINAL]
    for scope in scopes:
        pause = pauses.get(s, scope)
        if pause is not None:
            return pauses.describe(pause, now)
    return None


def post_dict(s: Session, p: Post, detail: bool = False) -> dict:
    d = {
        "id": p.id, "watch_id": p.watch_id, "file_name": p.file_name, "folder_name": p.folder_name,
        "source_ref": p.source_ref, "status": p.status, "last_error": p.last_error,
        "waiting_for": waiting_for(s, p),
        "next_attempt_at": _iso(p.next_attempt_at) if p.status in states.POST_ACTIVE else None,
        "created_at": _iso(p.created_at), "finished_at": _iso(p.finished_at),
    }
    if detail:
        d.update({
            "description": p.description, "capture_time": _iso(p.capture_time),
            "source_time": _iso(p.source_time), "captioner": p.captioner, "captions": p.captions,
            "hashtags": p.hashtags, "alt_text": p.alt_text, "usage": p.usage,
            "image": {"width": p.width, "height": p.height, "bytes": p.media_bytes},
            "targets": [{
                "id": t.id, "platform": t.platform, "connection_id": t.connection_id, "status": t.status,
                "attempts": t.attempts, "platform_post_id": t.platform_post_id, "url": t.platform_url,
                "last_error": t.last_error, "published_at": _iso(t.published_at),
                "caption": caption_of(p, t), "approved_by": t.approved_by,
            } for t in targets(s, p)],
            "review_expires_at": _iso(p.review_expires_at), "skip_schedule": p.skip_schedule,
            "events": [{"at": _iso(e.at), "state": e.state, "target_id": e.target_id, "message": e.message,
                        "actor": e.actor} for e in events(s, p)],
        })
    return d
