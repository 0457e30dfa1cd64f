"""The durable pipeline.

A post moves ``detected -> downloaded -> captioned -> publishing -> published | partial | failed``
(or ``skipped`` when it waited past the watch's ``maximum_age``). Each transition is committed before
the next step's side effect, so a crash anywhere resumes from the last committed state:

* download and caption are safe to repeat (they only write our own media file / call the captioner);
* publish is not, so a target is committed as ``publishing`` *before* the platform call, and an
  interrupted target is reconciled with ``Publisher.recover`` before anything is sent again.

Every transition also appends a :class:`PostEvent`, so the reason for any state is visible.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from aiposter import captioners, images, metrics, publishers, sources
from aiposter.captioners.base import CaptionRequest
from aiposter.config import Config
from aiposter.core import states
from aiposter.core.errors import CaptionError, PublishError, StepError
from aiposter.core.models import (
    Post,
    PostEvent,
    PostTarget,
    SourceFile,
    User,
    Watch,
    WatchTarget,
    utcnow,
)
from aiposter.core.retry import Backoff, GiveUp
from aiposter.crypto import Keyring
from aiposter.db import session_scope
from aiposter.logs import fields
from aiposter.publishers.base import PublishRequest
from aiposter.sources.base import Listing, RemoteFile, WatchRef

log = logging.getLogger("aiposter.pipeline")

# Caption errors that mean "the provider is down or throttling", not "this image is a problem".
OUTAGE_CODES = {"timeout", "rate_limited", "server_error", "connection", "overloaded"}
# Errors of the whole install (bad API key, billing): every post would fail the same way, so captioning
# waits for the operator instead, at the longest backoff, with the reason on every waiting post.
INSTALL_CODES = {"auth", "quota"}


@dataclass
class Breaker:
    """Per-provider pause: during an outage, captioning waits instead of burning every post's attempts."""

    until: datetime | None = None
    failures: int = 0
    last_error: str = ""


@dataclass
class Context:
    """Everything a pipeline step needs; adapters are built once per process and reused."""

    cfg: Config
    engine: Engine
    owner: str = "local"
    keyring: Keyring | None = None  # decrypts connection credentials for sources and publishers
    _cache: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def _get(self, kind: str, name: str, factory):
        with self._lock:
            key = (kind, name)
            if key not in self._cache:
                self._cache[key] = factory()
            return self._cache[key]

    def source(self, name: str):
        return self._get("source", name, lambda: sources.build(name, self.cfg, context=self))

    def captioner(self, name: str):
        return self._get("captioner", name, lambda: captioners.build(name, self.cfg))

    def publisher(self, platform: str):
        return self._get("publisher", platform, lambda: publishers.build(platform, self.cfg, context=self))

    def backoff(self, step: str) -> Backoff:
        r = self.cfg.retry
        attempts = {"download": r.download_attempts, "caption": r.caption_attempts,
                    "publish": r.publish_attempts}[step]
        return Backoff(r.base_delay_seconds, r.max_delay_seconds, attempts)

    def media_path(self, post_id: int) -> Path:
        return self.cfg.media_dir / f"{post_id}.jpg"


def add_event(session: Session, post_id: int, state: str, message: str = "",
              target_id: int | None = None) -> None:
    session.add(PostEvent(post_id=post_id, target_id=target_id, state=state, message=message))


def _watch_ref(w: Watch) -> WatchRef:
    return WatchRef(id=w.id, user_id=w.user_id, folder=w.folder, connection_id=w.source_connection_id,
                    cursor=w.cursor)


# =========================================================================== polling


@dataclass
class PollResult:
    queued: int = 0
    baseline: int = 0
    skipped: int = 0
    settling: int = 0
    error: str | None = None


def poll_watch(ctx: Context, watch_id: int) -> PollResult:
    """List the watch's folder and turn each new, settled file into a post. The watch must be leased."""
    from aiposter.services.watches import folder_problem

    with session_scope(ctx.engine) as s:
        w = s.get(Watch, watch_id)
        if w is None:
            return PollResult(error="watch deleted")
        ref = _watch_ref(w)
        source_name = w.source
        # Re-checked at every poll, not only when the watch was made: roots change with the config.
        problem = folder_problem(ctx.cfg, s.get(User, w.user_id), w)
    if problem:
        _finish_poll(ctx, watch_id, error=problem)
        log.warning("watch.folder_refused", extra=fields(watch_id=watch_id, error=problem))
        return PollResult(error=problem)
    try:
        listing = ctx.source(source_name).list(ref)
    except StepError as exc:
        metrics.count_error("poll", source_name, exc)
        _finish_poll(ctx, watch_id, error=str(exc))
        log.warning("watch.poll_failed", extra=fields(watch_id=watch_id, error=str(exc)))
        return PollResult(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in one source must not stop the daemon
        log.exception("watch.poll_crashed", extra=fields(watch_id=watch_id))
        _finish_poll(ctx, watch_id, error=f"internal error: {exc!r}")
        return PollResult(error=repr(exc))
    return _record_listing(ctx, watch_id, listing)


def _finish_poll(ctx: Context, watch_id: int, error: str | None) -> None:
    metrics.POLLS.labels(result="error").inc()
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, watch_id)
        if w is None:
            return
        now = utcnow()
        w.last_poll_at = now
        w.last_poll_error = error
        w.next_poll_at = now + timedelta(seconds=w.interval_seconds)
        w.lease_owner = None
        w.lease_expires_at = None


def _record_listing(ctx: Context, watch_id: int, listing: Listing) -> PollResult:
    result = PollResult()
    metrics.POLLS.labels(result="ok").inc()
    now = utcnow()
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, watch_id)
        if w is None:
            return PollResult(error="watch deleted")
        refs = [f.ref for f in listing.files]
        known: dict[str, SourceFile] = {}
        for i in range(0, len(refs), 500):
            chunk = refs[i:i + 500]
            for sf in s.exec(select(SourceFile).where(SourceFile.watch_id == w.id,
                                                      SourceFile.ref.in_(chunk))):
                known[sf.ref] = sf
        targets: list[WatchTarget] | None = None  # loaded with the first new post: most polls find none
        first_poll = not w.baseline_done
        max_age = timedelta(hours=w.maximum_age_hours) if w.maximum_age_hours > 0 else None
        folder_name = listing.folder_name or w.folder_name

        for f in sorted(listing.files, key=lambda f: (f.arrived_at, f.name)):
            sf = known.get(f.ref)
            if sf is None:
                sf = SourceFile(watch_id=w.id, ref=f.ref, name=f.name, size=f.size,
                                fingerprint=f.fingerprint, source_time=f.arrived_at)
                s.add(sf)
                # The baseline is the folder when the watch was created: a file that arrived between
                # then and this first poll is new (watches from before baseline_at existed: first poll).
                if first_poll and not w.backfill and (w.baseline_at is None or f.arrived_at <= w.baseline_at):
                    sf.status, sf.reason = states.SF_BASELINE, "already in the folder when the watch started"
                    result.baseline += 1
                    continue
                if not f.ready:
                    sf.status = states.SF_SETTLING
                    result.settling += 1
                    continue
            elif sf.status == states.SF_SETTLING:
                settled = f.ready and f.size == sf.size
                sf.size, sf.fingerprint, sf.last_seen_at = f.size, f.fingerprint, now
                if not settled:
                    result.settling += 1
                    continue
            elif same_version(sf.fingerprint, f.fingerprint):
                if sf.fingerprint != f.fingerprint:
                    sf.fingerprint = f.fingerprint  # the same version, recorded in the current format
                continue  # seen before and already decided
            else:
                # A new version under a known name: a different photo saved as "image.jpg" again, or a copy
                # that was still being written when it was taken (and failed as truncated) now complete.
                # It is looked at again; the same bytes are still posted once (Post.content_hash).
                sf.reason = f"changed after it was {sf.status}; looked at again"
                sf.size, sf.fingerprint, sf.last_seen_at, sf.source_time = f.size, f.fingerprint, now, f.arrived_at
                if not f.ready:
                    sf.status = states.SF_SETTLING
                    result.settling += 1
                    continue
            if max_age is not None and now - f.arrived_at > max_age:
                sf.status = states.SF_SKIPPED
                sf.reason = (f"arrived {_ago(now - f.arrived_at)} ago, older than the watch's maximum_age "
                             f"of {w.maximum_age_hours:g} h")
                result.skipped += 1
                continue
            sf.status = states.SF_QUEUED
            s.flush()
            if targets is None:
                targets = list(s.exec(select(WatchTarget).where(WatchTarget.watch_id == w.id)))
            _create_post(s, w, sf, f, folder_name, targets)
            result.queued += 1

        w.baseline_done = True
        w.cursor = listing.cursor
        if folder_name:
            w.folder_name = folder_name
        w.last_poll_at = now
        w.last_poll_error = None
        w.next_poll_at = now + timedelta(seconds=w.interval_seconds)
        w.lease_owner = None
        w.lease_expires_at = None
    if result.queued or result.baseline or result.skipped:
        log.info("watch.polled", extra=fields(watch_id=watch_id, queued=result.queued,
                                              baseline=result.baseline, skipped=result.skipped))
    return result


def same_version(old: str, new: str) -> bool:
    """Whether two fingerprints of one ref are the same version of the file. An empty fingerprint (a
    source that gives none) never says "changed". Local fingerprints gained the inode
    (``ino:size:mtime_ns``); one stored before that (``size:mtime_ns``) matches on what it has, so an
    upgrade does not make every known file look new."""
    if not old or not new or old == new:
        return True
    if old.count(":") == 1 and new.count(":") == 2:
        return new.split(":", 1)[1] == old
    return False


def _create_post(s: Session, w: Watch, sf: SourceFile, f: RemoteFile, folder_name: str,
                 targets: list[WatchTarget]) -> None:
    post = Post(user_id=w.user_id, watch_id=w.id, source_file_id=sf.id, source_ref=f.ref, file_name=f.name,
                folder_name=folder_name, description=f.description, source_time=f.arrived_at)
    s.add(post)
    s.flush()
    for t in targets:
        s.add(PostTarget(post_id=post.id, platform=t.platform, connection_id=t.connection_id))
    add_event(s, post.id, states.DETECTED, f"new file {f.name!r} in {folder_name or w.folder}")
    metrics.FILES_DETECTED.inc()
    log.info("post.detected", extra=fields(post_id=post.id, watch_id=w.id, file=f.name))


def _ago(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs >= 86400:
        return f"{secs // 86400} d"
    if secs >= 3600:
        return f"{secs // 3600} h"
    return f"{secs // 60} min"


# =========================================================================== post steps


def process_post(ctx: Context, post_id: int) -> None:
    """Run the post's due steps one after another while we hold its lease."""
    for _ in range(8):  # bounded: at most every step once, plus publish rounds
        with session_scope(ctx.engine) as s:
            post = s.get(Post, post_id)
            if post is None or post.lease_owner != ctx.owner:
                return
            status = post.status
            due = post.next_attempt_at <= utcnow()
        if status not in states.POST_ACTIVE or not due:
            break
        step = {states.DETECTED: _download, states.DOWNLOADED: _caption,
                states.CAPTIONED: _publish, states.PUBLISHING: _publish}[status]
        try:
            advanced = step(ctx, post_id)
        except Exception as exc:  # noqa: BLE001 - a bug must fail one post visibly, not kill the worker
            log.exception("post.step_crashed", extra=fields(post_id=post_id, status=status))
            _step_failed(ctx, post_id, status, StepError(f"internal error: {exc!r}"))
            advanced = False
        if not advanced:
            break
    _release(ctx, post_id)


def _release(ctx: Context, post_id: int) -> None:
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).where(Post.id == post_id, Post.lease_owner == ctx.owner)
                  .values(lease_owner=None, lease_expires_at=None))


def _load(s: Session, post_id: int) -> tuple[Post, Watch, User]:
    post = s.get(Post, post_id)
    return post, s.get(Watch, post.watch_id), s.get(User, post.user_id)


def _download(ctx: Context, post_id: int) -> bool:
    with session_scope(ctx.engine) as s:
        post, w, _ = _load(s, post_id)
        ref, source_ref, source_name = _watch_ref(w), post.source_ref, w.source
    raw = ctx.cfg.media_dir / f"{post_id}.download"
    dest = ctx.media_path(post_id)
    try:
        ctx.source(source_name).fetch(ref, source_ref, raw, ctx.cfg.images.max_file_bytes)
        duplicate = _claim_content(ctx, post_id, ref.id, _sha256(raw))
        if duplicate is not None:
            _skip_duplicate(ctx, post_id, duplicate)
            return False
        im = ctx.cfg.images
        prepared = images.prepare(raw, dest, max_pixels=im.max_pixels, max_edge=im.max_edge,
                                  quality=im.jpeg_quality, max_bytes=im.max_file_bytes,
                                  budget=images.decode_budget(im.decode_memory_mb * 1024 * 1024))
    except StepError as exc:
        metrics.count_error("download", source_name, exc)
        _step_failed(ctx, post_id, states.DETECTED, exc)
        return False
    finally:
        raw.unlink(missing_ok=True)
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        # A retried post keeps the captions it already had: no second LLM call.
        post.status = states.CAPTIONED if post.captions else states.DOWNLOADED
        post.media_path = str(dest)
        post.media_bytes = prepared.bytes
        post.width, post.height = prepared.width, prepared.height
        post.capture_time = prepared.capture_time
        _advance(post)
        add_event(s, post_id, states.DOWNLOADED,
                  f"{prepared.source_format} image prepared as {prepared.width}x{prepared.height} JPEG, "
                  "metadata removed")
    log.info("post.downloaded", extra=fields(post_id=post_id, bytes=prepared.bytes))
    return True


def _sha256(path: Path) -> str:
    """The content identity of a downloaded file (~3 ms for a 5 MB photo, from the page cache)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _claim_content(ctx: Context, post_id: int, watch_id: int, digest: str) -> Post | None:
    """Record the post's content hash; None if it is now the watch's only live post of these bytes, else
    the post that already has them. The unique index (watch_id, content_hash) decides, so two workers
    downloading two copies of one photo at once cannot both go on."""
    for _ in range(3):
        try:
            with session_scope(ctx.engine) as s:
                s.execute(sa.update(Post).where(Post.id == post_id).values(content_hash=digest))
            return None
        except sa.exc.IntegrityError:
            with session_scope(ctx.engine) as s:
                other = s.exec(select(Post).where(Post.watch_id == watch_id, Post.content_hash == digest,
                                                  Post.id != post_id)).first()
            if other is not None:
                return other
            # The other post ended (failed or skipped) and released the hash meanwhile: claim again.
    raise StepError("could not record the photo's content hash", code="conflict")


def _skip_duplicate(ctx: Context, post_id: int, other: Post) -> None:
    reason = (f"the same photo (identical bytes) as post {other.id} ({other.file_name!r}, {other.status}); "
              "not posted twice")
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id)):
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, reason, utcnow()
        post.last_error = reason
        _finish(s, ctx, post, states.SKIPPED, reason)
    log.info("post.duplicate", extra=fields(post_id=post_id, same_as=other.id))


def _advance(post: Post) -> None:
    post.step_attempts = 0
    post.last_error = None
    post.next_attempt_at = utcnow()
    post.updated_at = utcnow()


def _caption(ctx: Context, post_id: int) -> bool:
    with session_scope(ctx.engine) as s:
        post, w, user = _load(s, post_id)
        name = w.captioner or ctx.cfg.captioner.default
        platforms = [t.platform for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id))]
        req = CaptionRequest(
            image_path=Path(post.media_path), file_name=post.file_name, folder_name=post.folder_name,
            platforms=platforms, description=post.description, capture_date=post.capture_time,
            prompt_template=w.prompt_template, brand_voice=user.brand_voice,
            default_hashtags=list(user.default_hashtags or []),
        )
    breaker = ctx.breakers.setdefault(name, Breaker())
    now = utcnow()
    if breaker.until and breaker.until > now:
        _defer(ctx, post_id, breaker.until,
               f"waiting: captioner {name} is unavailable ({breaker.last_error}); paused until "
               f"{breaker.until:%H:%M:%S} UTC")
        return False
    if not Path(req.image_path).exists():
        # The prepared image is gone (e.g. media dir wiped): download again rather than fail.
        with session_scope(ctx.engine) as s:
            post = s.get(Post, post_id)
            post.status = states.DETECTED
            add_event(s, post_id, states.DETECTED, "prepared image missing; downloading again")
        return True
    try:
        result = metrics.timed(metrics.LLM_LATENCY.labels(captioner=name), ctx.captioner(name).caption, req)
    except CaptionError as exc:
        metrics.count_error("caption", name, exc)
        if (not exc.permanent and exc.code in OUTAGE_CODES) or exc.code in INSTALL_CODES:
            breaker.failures += 1
            delay = ctx.backoff("caption").delay(breaker.failures)
            if exc.code in INSTALL_CODES:
                delay = ctx.cfg.retry.max_delay_seconds
            if exc.retry_after:
                delay = max(delay, exc.retry_after)
            breaker.until = utcnow() + timedelta(seconds=delay)
            breaker.last_error = str(exc)
            log.warning("captioner.paused", extra=fields(post_id=post_id, captioner=name,
                                                         seconds=round(delay), error=str(exc)))
            _defer(ctx, post_id, breaker.until,
                   f"waiting: captioner {name} is unavailable ({exc}); retrying in {delay:.0f}s")
            return False
        _step_failed(ctx, post_id, states.DOWNLOADED, exc)
        return False
    breaker.failures, breaker.until = 0, None
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        post.status = states.CAPTIONED
        post.captioner = name
        post.captions = dict(result.captions)
        post.hashtags = list(result.hashtags)
        post.alt_text = result.alt_text
        post.usage = dict(result.usage)
        _advance(post)
        tokens = ""
        if result.usage.get("input_tokens") is not None:
            tokens = f" ({result.usage.get('input_tokens')} in / {result.usage.get('output_tokens')} out tokens)"
        add_event(s, post_id, states.CAPTIONED, f"captioned by {name}{tokens}")
    log.info("post.captioned", extra=fields(post_id=post_id, captioner=name))
    return True


def _defer(ctx: Context, post_id: int, until: datetime, reason: str) -> None:
    """Wait without spending an attempt (the cause is outside this post)."""
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        post.next_attempt_at = until
        if post.last_error != reason:
            post.last_error = reason
        post.updated_at = utcnow()


def _step_failed(ctx: Context, post_id: int, status: str, exc: StepError) -> None:
    step = {states.DETECTED: "download", states.DOWNLOADED: "caption"}.get(status, "publish")
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        if step == "publish":
            # Publishing failures are per target; an unexpected error here retries the round.
            post.last_error = str(exc)
            post.next_attempt_at = utcnow() + timedelta(seconds=ctx.cfg.retry.base_delay_seconds)
            add_event(s, post_id, post.status, f"publish round failed: {exc}")
            return
        post.step_attempts += 1
        decision = ctx.backoff(step).decide(post.step_attempts, exc, utcnow())
        if isinstance(decision, GiveUp):
            _fail_post(s, ctx, post, f"{step} failed: {decision.reason}")
            log.warning("post.failed", extra=fields(post_id=post_id, step=step, error=decision.reason))
        else:
            post.next_attempt_at = decision.at
            post.last_error = f"{step}: {decision.reason}"
            post.updated_at = utcnow()
            add_event(s, post_id, post.status, post.last_error)
            log.info("post.retry", extra=fields(post_id=post_id, step=step, delay=round(decision.delay, 1),
                                                error=str(exc)))


def _fail_post(s: Session, ctx: Context, post: Post, reason: str) -> None:
    for t in s.exec(select(PostTarget).where(PostTarget.post_id == post.id)):
        if t.status in (states.T_PENDING,):
            t.status, t.last_error, t.updated_at = states.T_FAILED, f"not attempted: {reason}", utcnow()
    post.status = states.FAILED
    post.last_error = reason
    _finish(s, ctx, post, states.FAILED, reason)


def _finish(s: Session, ctx: Context, post: Post, status: str, message: str) -> None:
    post.status = status
    post.finished_at = post.updated_at = utcnow()
    post.next_attempt_at = utcnow()
    post.media_path = None
    if status in (states.FAILED, states.SKIPPED):
        post.content_hash = None  # never posted: the same bytes dropped again get another chance
    add_event(s, post.id, status, message)
    # Image bytes live only while a post is in flight. If we crash between this commit and the unlink,
    # the housekeeping sweep deletes the file instead.
    s.commit()
    images.remove_media(ctx.cfg.media_dir, post.id)


# --------------------------------------------------------------------------- publishing


def _publish(ctx: Context, post_id: int) -> bool:
    now = utcnow()
    with session_scope(ctx.engine) as s:
        post, w, _ = _load(s, post_id)
        if post.status == states.CAPTIONED:
            if w.maximum_age_hours > 0 and post.source_time and \
                    now - post.source_time > timedelta(hours=w.maximum_age_hours):
                reason = (f"waited {_ago(now - post.source_time)} since the file arrived, longer than the "
                          f"watch's maximum_age of {w.maximum_age_hours:g} h; not posted")
                for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id)):
                    t.status, t.last_error = states.T_SKIPPED, reason
                post.last_error = reason
                _finish(s, ctx, post, states.SKIPPED, reason)
                return False
            if w.min_spacing_seconds > 0:
                gate = s.execute(
                    sa.update(Watch).where(Watch.id == w.id)
                    .where(sa.or_(Watch.next_publish_at.is_(None), Watch.next_publish_at <= now))
                    .values(next_publish_at=now + timedelta(seconds=w.min_spacing_seconds))
                )
                if gate.rowcount != 1:
                    s.refresh(w)
                    post.next_attempt_at = w.next_publish_at
                    post.last_error = (f"waiting: next post of this watch allowed at "
                                       f"{w.next_publish_at:%Y-%m-%d %H:%M:%S} UTC (min_spacing)")
                    return False
            post.status = states.PUBLISHING
            post.last_error = None
            add_event(s, post_id, states.PUBLISHING, "publishing to " + ", ".join(
                t.platform for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id))))
        targets = [t.id for t in s.exec(
            select(PostTarget).where(PostTarget.post_id == post_id,
                                     PostTarget.status.in_((states.T_PENDING, states.T_PUBLISHING)),
                                     PostTarget.next_attempt_at <= now).order_by(PostTarget.id))]
    for target_id in targets:
        _publish_target(ctx, post_id, target_id)
    return _settle(ctx, post_id)


def _request(post: Post, t: PostTarget, media: Path) -> PublishRequest:
    caption = post.captions.get(t.platform) or next(iter(post.captions.values()), "")
    return PublishRequest(post_id=post.id, target_id=t.id, platform=t.platform, media_path=media,
                          caption=caption, alt_text=post.alt_text, file_name=post.file_name,
                          connection_id=t.connection_id, container_id=t.container_id)


def _publish_target(ctx: Context, post_id: int, target_id: int) -> None:
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        t = s.get(PostTarget, target_id)
        req = _request(post, t, ctx.media_path(post_id))
        interrupted = t.status == states.T_PUBLISHING
        platform = t.platform
        missing_connection = platform in publishers.NEEDS_CONNECTION and t.connection_id is None
    if missing_connection:
        _target_failed(ctx, target_id, PublishError(
            f"the {platform} account was disconnected; reconnect it and retry", permanent=True,
            code="no_connection"))
        return
    try:
        publisher = ctx.publisher(platform)
    except (ValueError, ImportError) as exc:
        _target_failed(ctx, target_id, PublishError(f"publisher unavailable: {exc}", permanent=True))
        return

    if interrupted:
        # The last attempt may have reached the platform: ask before sending anything again.
        try:
            existing = publisher.recover(req)
        except PublishError as exc:
            _target_failed(ctx, target_id, PublishError(
                f"an earlier attempt was interrupted and its outcome cannot be confirmed ({exc}); not "
                "re-sent to avoid a duplicate: check the account, then retry this target",
                permanent=True, code="outcome_unknown"))
            return
        if existing is not None:
            _target_published(ctx, target_id, existing, "confirmed after an interrupted attempt")
            return

    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        t.status = states.T_PUBLISHING
        t.attempts += 1
        t.updated_at = utcnow()
        add_event(s, post_id, states.T_PUBLISHING, f"{platform}: attempt {t.attempts}", target_id)
    try:
        result = metrics.timed(metrics.PLATFORM_LATENCY.labels(platform=platform), publisher.publish, req)
    except PublishError as exc:
        if exc.ambiguous:
            # Leave it `publishing`: the next round reconciles through recover() first.
            with session_scope(ctx.engine) as s:
                t = s.get(PostTarget, target_id)
                t.last_error = f"outcome unknown, will check before retrying: {exc}"
                t.next_attempt_at = utcnow() + timedelta(seconds=ctx.cfg.retry.base_delay_seconds)
                add_event(s, post_id, states.T_PUBLISHING, t.last_error, target_id)
            return
        _target_failed(ctx, target_id, exc)
        return
    _target_published(ctx, target_id, result, f"published on {platform}")


def _target_published(ctx: Context, target_id: int, result, message: str) -> None:
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        t.status = states.T_PUBLISHED
        t.platform_post_id = result.platform_post_id
        t.platform_url = result.url
        t.published_at = t.updated_at = utcnow()
        t.last_error = None
        add_event(s, t.post_id, states.T_PUBLISHED, f"{message}: {result.platform_post_id}", target_id)
    log.info("target.published", extra=fields(post_id=t.post_id, target_id=target_id, platform=t.platform,
                                              platform_post_id=result.platform_post_id))


def _target_failed(ctx: Context, target_id: int, exc: StepError) -> None:
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        metrics.count_error("publish", t.platform, exc)
        decision = ctx.backoff("publish").decide(max(t.attempts, 1), exc, utcnow())
        if isinstance(decision, GiveUp):
            t.status = states.T_FAILED
            t.last_error = f"{t.platform}: {decision.reason}"
            log.warning("target.failed", extra=fields(post_id=t.post_id, target_id=target_id,
                                                      platform=t.platform, error=decision.reason))
        else:
            t.status = states.T_PENDING
            t.next_attempt_at = decision.at
            t.last_error = f"{t.platform}: {decision.reason}"
        t.updated_at = utcnow()
        add_event(s, t.post_id, t.status, t.last_error, target_id)


def _settle(ctx: Context, post_id: int) -> bool:
    """Finish the post when every target is done; otherwise schedule the next round."""
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        ts = list(s.exec(select(PostTarget).where(PostTarget.post_id == post_id)))
        open_ = [t for t in ts if t.status not in states.TARGET_TERMINAL]
        if open_:
            post.next_attempt_at = min(t.next_attempt_at for t in open_)
            errors = [t.last_error for t in open_ if t.last_error]
            post.last_error = errors[0] if errors else None
            post.updated_at = utcnow()
            return False
        ok = [t for t in ts if t.status == states.T_PUBLISHED]
        bad = [t for t in ts if t.status == states.T_FAILED]
        if ok and not bad:
            post.last_error = None
            _finish(s, ctx, post, states.PUBLISHED, "published on " + ", ".join(t.platform for t in ok))
        elif ok:
            post.last_error = "; ".join(t.last_error or t.platform for t in bad)
            _finish(s, ctx, post, states.PARTIAL,
                    f"published on {', '.join(t.platform for t in ok)}; failed on "
                    f"{', '.join(t.platform for t in bad)}")
        elif bad:
            post.last_error = "; ".join(t.last_error or t.platform for t in bad)
            _finish(s, ctx, post, states.FAILED, post.last_error)
        else:
            _finish(s, ctx, post, states.SKIPPED, post.last_error or "no target to publish to")
        log.info("post.finished", extra=fields(post_id=post_id, status=post.status))
        return False
