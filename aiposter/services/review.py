"""Review before publishing: the owner sees, edits, regenerates, approves or rejects a captioned post.

A watch with ``approval = "review"`` stops each captioned post in ``awaiting_review`` (a durable state,
in flight: its prepared image is kept, so the owner can preview it). Its ``next_attempt_at`` is the end of
the review time (``review_ttl_hours``): if nobody acts, the pipeline expires it and deletes the image.

Captions: what the owner approves is what is published. Approval copies each approved target's text into
``post_target.caption`` (edits are stored there at once), and the publisher sends ``post_target.caption``
when it is set; regenerating clears the edits. Every action appends a post event naming who did it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select

from aiposter.captioners import fitting
from aiposter.core import states
from aiposter.core.models import Post, PostEvent, PostTarget, User, Watch, utcnow
from aiposter.services import Conflict, Invalid, NotFound, notify
from aiposter.services.audit import Actor

APPROVAL_MODES = ("auto", "review")


class TooLong(Invalid):
    """An edit over a platform's limit (HTTP 422): names the platform, the limit and the count."""


    def __init__(self, platform: str, what: str, limit: int, count: int, unit: str = "characters"):
        super().__init__(f"{what} for {platform} is {count} {unit}; the limit is {limit}", field=what)
        self.platform, self.limit, self.count = platform, limit, count


def actor_label(actor: Actor) -> str:
    return f"user:{actor.user.id} {actor.user.email}" if actor.user is not None else "operator (cli)"


def _event(s: Session, post: Post, state: str, message: str, actor: Actor, target_id: int | None = None) -> None:
    s.add(PostEvent(post_id=post.id, target_id=target_id, state=state, message=message, actor=actor_label(actor)))


def add_usage(old: dict | None, new: dict | None, again: bool) -> dict:
    """Token usage of a post's captioning; ``again`` (a regeneration in review): added to the earlier
    calls' (``captionings`` counts them), keeping the last call's other fields (model name...)."""
    if not again:
        return dict(new or {})
    out = dict(old or {})
    for k, v in (new or {}).items():
        if k.endswith("_tokens") and isinstance(v, int | float) and isinstance(out.get(k), int | float):
            out[k] = out[k] + v
        else:
            out[k] = v
    out["captionings"] = int((old or {}).get("captionings", 1)) + 1
    return out


# ----------------------------------------------------------------------------------------- pipeline side


def hold_for_review(s: Session, post: Post, watch: Watch) -> None:
    """Called by the pipeline in the captioning transaction: the post waits for its owner."""
    now = utcnow()
    if post.review_expires_at is None:
        post.review_expires_at = now + timedelta(hours=watch.review_ttl_hours)
    post.status = states.AWAITING_REVIEW
    post.next_attempt_at = post.review_expires_at
    post.review_note = None
    post.last_error = None
    s.add(PostEvent(post_id=post.id, state=states.AWAITING_REVIEW,
                    message=f"waiting for review until {post.review_expires_at:%Y-%m-%d %H:%M} UTC"))
    notify.awaiting_review(s, post)


def expire_if_due(s: Session, post: Post, now: datetime) -> bool:
    """True when the post's review time is over: its targets are skipped and the caller finishes it as
    expired (which deletes its image). Otherwise it is put back to wait for the deadline."""
    if post.review_expires_at is None or post.review_expires_at > now:
        post.next_attempt_at = post.review_expires_at or now + timedelta(hours=72)
        return False
    reason = f"not reviewed before {post.review_expires_at:%Y-%m-%d %H:%M} UTC (review_ttl_hours); not posted"
    for t in s.exec(select(PostTarget).where(PostTarget.post_id == post.id)):
        if t.status not in states.TARGET_TERMINAL:
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, reason, now
    post.last_error = reason
    post.content_hash = None
    return True


# ----------------------------------------------------------------------------------------- owner side


def _in_review(post: Post) -> None:
    if post.status != states.AWAITING_REVIEW:
        raise Conflict(f"post {post.id} is {post.status}, not awaiting review")
    if post.lease_owner and post.lease_expires_at and post.lease_expires_at > utcnow():
        raise Conflict("the post is being processed right now; try again in a moment")


def _targets(s: Session, post: Post) -> list[PostTarget]:
    return list(s.exec(select(PostTarget).where(PostTarget.post_id == post.id).order_by(PostTarget.id)))


def caption_of(post: Post, t: PostTarget) -> str:
    """The text this target would publish: the owner's edit, else the generated caption."""
    if t.caption is not None:
        return t.caption
    return post.captions.get(t.platform) or next(iter(post.captions.values()), "")


def review_dict(s: Session, post: Post) -> dict:
    ts = _targets(s, post)
    return {
        "post_id": post.id, "status": post.status, "file_name": post.file_name,
        "review_expires_at": post.review_expires_at.isoformat(timespec="seconds") if post.review_expires_at
        else None,
        "image_url": f"/api/v1/posts/{post.id}/image" if post.media_key else None,
        "alt_text": post.alt_text, "hashtags": list(post.hashtags or []), "usage": dict(post.usage or {}),
        "targets": [{
            "id": t.id, "platform": t.platform, "status": t.status, "caption": caption_of(post, t),
            "edited": t.caption is not None, "approved_by": t.approved_by,
            "length": fitting.limits_for(t.platform).length(caption_of(post, t)),
            "max_length": fitting.limits_for(t.platform).max_length,
        } for t in ts],
    }


def validate_caption(platform: str, text: str) -> str:
    """The caption cleaned as every caption is; an edit over the platform's limits is refused (not cut:
    the owner wrote it and must choose what goes)."""
    limits = fitting.limits_for(platform)
    cleaned = fitting.clean(text)
    if not cleaned:
        raise Invalid(f"the caption for {platform} is empty", field="caption")
    n = limits.length(cleaned)
    if n > limits.max_length:
        raise TooLong(platform, "caption", limits.max_length, n)
    tags = fitting.count_hashtags(cleaned)
    if tags > limits.max_hashtags:
        raise TooLong(platform, "hashtags", limits.max_hashtags, tags, unit="hashtags")
    mentions = fitting.count_mentions(cleaned)
    if mentions > limits.max_mentions:
        raise TooLong(platform, "mentions", limits.max_mentions, mentions, unit="mentions")
    return cleaned


def validate_alt_text(text: str) -> str:
    cleaned = fitting.clean(text)
    n = len(cleaned)
    if n > fitting.ALT_TEXT_MAX:
        raise TooLong("every platform", "alt_text", fitting.ALT_TEXT_MAX, n)
    return fitting.fit_alt_text(cleaned)


def edit(s: Session, post: Post, actor: Actor, captions: dict[str, str] | None = None,
         alt_text: str | None = None) -> Post:
    """Edit captions (keyed by target id as text, or by platform for every target on it) and alt text."""
    _in_review(post)
    ts = _targets(s, post)
    changes: list[tuple[PostTarget, str]] = []
    for key, text in (captions or {}).items():
        key = str(key)
        hit = [t for t in ts if str(t.id) == key] or [t for t in ts if t.platform == key]
        if not hit:
            raise NotFound(f"no target {key!r} on post {post.id}")
        for t in hit:
            changes.append((t, validate_caption(t.platform, text)))
    new_alt = validate_alt_text(alt_text) if alt_text is not None else None
    if not changes and new_alt is None:
        raise Invalid("nothing to edit: give captions and/or alt_text")
    now = utcnow()
    for t, text in changes:
        if t.status != states.T_PENDING:
            raise Conflict(f"target {t.id} ({t.platform}) is {t.status}; only pending targets can be edited")
        t.caption, t.approved_by, t.updated_at = text, None, now
        _event(s, post, states.AWAITING_REVIEW, f"{t.platform}: caption edited", actor, t.id)
    if new_alt is not None:
        post.alt_text = new_alt
        _event(s, post, states.AWAITING_REVIEW, "alt text edited", actor)
    post.updated_at = now
    return post


def regenerate(s: Session, post: Post, actor: Actor, instruction: str = "") -> Post:
    """Ask the captioner again (in the pipeline, with its retries and pauses), with the owner's note; the
    post comes back to review with the new captions and the token usage added up. Edits are dropped."""
    _in_review(post)
    instruction = fitting.clean(instruction or "")
    if len(instruction) > 500:
        raise TooLong("the captioner", "instruction", 500, len(instruction))
    now = utcnow()
    for t in _targets(s, post):
        t.caption, t.approved_by = None, None
    post.status, post.review_note = states.DOWNLOADED, instruction or None
    post.step_attempts, post.next_attempt_at, post.updated_at, post.paused_by = 0, now, now, None
    _event(s, post, states.DOWNLOADED, "new captions requested" + (f": {instruction}" if instruction else ""),
           actor)
    return post


def approve(s: Session, post: Post, actor: Actor, target_ids: list[int] | None = None) -> Post:
    """Approve the post for every target, or only ``target_ids`` (the others are skipped: not approved).
    The approved text is frozen into each target, so exactly what the owner saw is published."""
    _in_review(post)
    ts = [t for t in _targets(s, post) if t.status == states.T_PENDING]
    chosen = ts if not target_ids else [t for t in ts if t.id in set(target_ids)]
    if target_ids and len(chosen) != len(set(target_ids)):
        missing = sorted(set(target_ids) - {t.id for t in chosen})
        raise NotFound(f"no pending target {', '.join(map(str, missing))} on post {post.id}")
    if not chosen:
        raise Invalid(f"post {post.id} has no pending target to approve")
    who, now = actor_label(actor), utcnow()
    for t in ts:
        if t in chosen:
            t.caption, t.approved_by, t.updated_at = caption_of(post, t), who, now
            _event(s, post, "approved", f"{t.platform}: approved", actor, t.id)
        else:
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, f"not approved by {who}", now
            _event(s, post, states.T_SKIPPED, f"{t.platform}: not approved", actor, t.id)
    post.status, post.next_attempt_at, post.updated_at, post.last_error = states.CAPTIONED, now, now, None
    return post


def reject(s: Session, post: Post, actor: Actor, media, reason: str = "") -> Post:
    """Reject: nothing is published and the image bytes are deleted at once."""
    _in_review(post)
    now = utcnow()
    why = f"rejected by {actor_label(actor)}" + (f": {fitting.clean(reason)[:500]}" if reason.strip() else "")
    for t in _targets(s, post):
        if t.status not in states.TARGET_TERMINAL:
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, why, now
    post.status, post.last_error = states.REJECTED, why
    post.finished_at = post.updated_at = post.next_attempt_at = now
    post.media_key, post.content_hash = None, None
    _event(s, post, states.REJECTED, why, actor)
    s.commit()  # the record first: if we die before the delete, the housekeeping sweep deletes the file
    media.delete_post(post.id)
    return post


def publish_now(s: Session, post: Post, actor: Actor) -> Post:
    """Skip the watch's posting schedule (windows and daily cap) for this post; min_spacing still holds.
    A post in review must be approved first."""
    if post.status not in (states.DETECTED, states.DOWNLOADED, states.CAPTIONED):
        raise Conflict(f"post {post.id} is {post.status}; publish-now applies to a post not yet publishing"
                       + (" (approve it first)" if post.status == states.AWAITING_REVIEW else ""))
    now = utcnow()
    post.skip_schedule = True
    post.next_attempt_at, post.updated_at = now, now
    _event(s, post, post.status, "publish now: the posting schedule is skipped", actor)
    return post


def pending_reviews(s: Session, user: User) -> list[Post]:
    return list(s.exec(select(Post).where(Post.user_id == user.id, Post.status == states.AWAITING_REVIEW)
                       .order_by(Post.id)))
