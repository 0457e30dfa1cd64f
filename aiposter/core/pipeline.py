"""The durable pipeline.

A post moves ``detected -> downloaded -> captioned -> publishing -> published | partial | failed``
(or ``skipped`` when it waited past the watch's ``maximum_age``). Each transition is committed before
the next step's side effect, so a crash anywhere resumes from the last committed state:

* download and caption are safe to repeat (they only write our own media file / call the captioner);
* publish is not, so a target is committed as in flight (``step_started_at``) *before* every platform
  call, and an interrupted target is reconciled with ``Publisher.recover`` before anything is sent again.

Publishing may take several steps (create a container, wait for it, publish it): a publisher answers one
step at a time, ``Published`` or ``Pending`` with a durable handle. A pending target is committed with
its handle and a time to look again, and the worker moves on; the handle survives a crash, so the flow
resumes where it was instead of starting over. Every step is bounded: failures (including bugs in an
adapter) count as attempts, and a platform that keeps a target pending past
``retry.publish_max_wait_seconds`` fails it with its last status.

Prepared images live in the media store (:mod:`aiposter.core.media`), shared by every replica, under the
post's ``media_key``. Every transition also appends a :class:`PostEvent`, so the reason for any state is
visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from aiposter import images, metrics
from aiposter.config import Config
from aiposter.core import credentials, image_types, pauses, registry, schedule, states
from aiposter.core.errors import CaptionError, PublishError, SourceError, StepError
from aiposter.core.media import MediaStore, MediaUrls, post_key, store_for, urls_for
from aiposter.core.models import (
    Connection,
    Post,
    PostEvent,
    PostTarget,
    SourceFile,
    User,
    Watch,
    WatchTarget,
    utcnow,
)
from aiposter.core.ports import CaptionRequest, Listing, Pending, Published, PublishRequest, RemoteFile, WatchRef
from aiposter.core.retry import Backoff, GiveUp
from aiposter.crypto import Keyring
from aiposter.db import connection_lost, ids_in, is_sqlite, read_scope, session_scope
from aiposter.logs import fields
from aiposter.services import notify, review

log = logging.getLogger("aiposter.pipeline")

@dataclass
class Context:
    """Everything a pipeline step needs. Adapters are built from the registry once per worker thread
    (httplib2, under google-api-python-client, is not thread-safe) and see only :attr:`deps`."""

    cfg: Config
    engine: Engine
    owner: str = "local"
    keyring: Keyring | None = None  # decrypts connection credentials; signs media URLs
    credentials: Any = None  # a CredentialStore; default: one on this engine and keyring
    media: MediaStore | None = None  # default: the install's store ([media])
    media_urls: MediaUrls | None = field(default=None, init=False)
    deps: registry.AdapterDeps = field(init=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)
    _generation: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.media is None:
            self.media = store_for(self.cfg)
        if self.credentials is None and self.keyring is not None:
            self.credentials = credentials.CredentialStore(self.engine, self.keyring, self.cfg)
        self.media_urls = urls_for(self.cfg, self.keyring)
        self.deps = registry.AdapterDeps(self.cfg, self.credentials, self.media, self.media_urls)

    def _get(self, kind: str, name: str):
        generation = (registry.generation(), self._generation)
        if getattr(self._local, "generation", None) != generation:
            self._local.adapters, self._local.generation = {}, generation
        cache = self._local.adapters
        if (kind, name) not in cache:
            cache[(kind, name)] = registry.build(kind, name, self.deps)
        return cache[(kind, name)]

    def reset_adapters(self) -> None:
        """Build adapters afresh in every thread (after a config change)."""
        self._generation += 1

    def source(self, name: str):
        return self._get(registry.SOURCE, name)

    def captioner(self, name: str):
        return self._get(registry.CAPTIONER, name)

    def publisher(self, platform: str):
        return self._get(registry.DESTINATION, platform)

    def backoff(self, step: str) -> Backoff:
        r = self.cfg.retry
        attempts = {"download": r.download_attempts, "caption": r.caption_attempts,
                    "publish": r.publish_attempts}[step]
        return Backoff(r.base_delay_seconds, r.max_delay_seconds, attempts)


def add_event(session: Session, post_id: int, state: str, message: str = "",
              target_id: int | None = None, actor: str | None = None) -> None:
    session.add(PostEvent(post_id=post_id, target_id=target_id, state=state, message=message, actor=actor))


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


def poll_watches(ctx: Context, watch_ids: list[int]) -> int:
    """:func:`poll_watch` for a batch of leased watches, with the idle case done in bulk; returns how many
    watches took the one-watch path (0: the whole batch was idle, nothing new can be due because of it).

    One read snapshot loads the watches, their users and their known files; each folder is listed; a
    watch whose listing changes nothing (every file known, same version, decided; same cursor and folder
    name; baseline done) needs only its poll bookkeeping, written for the whole batch in one executemany.
    Any other watch (new or changed files, an error, a refused folder) goes through the one-watch path,
    unchanged, with the listing already taken."""
    from aiposter.services.watches import folder_problem

    with read_scope(ctx.engine) as conn, Session(bind=conn) as s:
        ws = list(s.exec(select(Watch).where(ids_in(Watch.id, watch_ids, ctx.engine))))
        users = {u.id: u for u in s.exec(select(User).where(ids_in(User.id, {w.user_id for w in ws}, ctx.engine)))}
        plans = [(w.id, w.source, _watch_ref(w), folder_problem(ctx.cfg, users[w.user_id], w), w.baseline_done,
                  w.cursor, w.folder_name, w.interval_seconds) for w in ws]
        known: dict[int, dict[str, tuple[str, str | None]]] = {w.id: {} for w in ws}
        q = sa.select(SourceFile.watch_id, SourceFile.ref, SourceFile.status, SourceFile.fingerprint).where(
            ids_in(SourceFile.watch_id, watch_ids, ctx.engine))
        for row in conn.execute(q):
            known[row.watch_id][row.ref] = (row.status, row.fingerprint)
    idle: list[dict] = []
    full_path = 0
    now = utcnow()
    for wid, source_name, ref, problem, baseline_done, cursor, folder_name, interval in plans:
        if problem:
            full_path += 1
            _finish_poll(ctx, wid, error=problem)
            log.warning("watch.folder_refused", extra=fields(watch_id=wid, error=problem))
            continue
        try:
            listing = ctx.source(source_name).list(ref)
        except StepError as exc:
            full_path += 1
            metrics.count_error("poll", source_name, exc)
            _finish_poll(ctx, wid, error=str(exc))
            log.warning("watch.poll_failed", extra=fields(watch_id=wid, error=str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - a bug in one source must not stop the daemon
            full_path += 1
            log.exception("watch.poll_crashed", extra=fields(watch_id=wid))
            _finish_poll(ctx, wid, error=f"internal error: {exc!r}")
            continue
        files = known[wid]
        unchanged = (baseline_done and listing.cursor == cursor
                     and (listing.folder_name or folder_name) == folder_name
                     and all((k := files.get(f.ref)) is not None and k[0] != states.SF_SETTLING
                             and k[1] == f.fingerprint for f in listing.files))
        if not unchanged:
            full_path += 1
            _record_listing(ctx, wid, listing)
            continue
        metrics.POLLS.labels(result="ok").inc()
        idle.append({"wid": wid, "now": now, "next": next_poll_at(wid, interval, now)})
    if idle:
        with session_scope(ctx.engine) as s:
            s.connection().execute(*_idle_bookkeeping(ctx, idle, now))
    return full_path


def _idle_bookkeeping(ctx: Context, idle: list[dict], now: datetime) -> tuple:
    """The statement (and its parameters) that records a batch of idle polls and drops their leases. On
    SQLite an executemany; on PostgreSQL one ``UPDATE ... FROM unnest(:ids, :nexts)`` (an executemany there
    is one execution per row: 2.0 ms of client and 1.8 ms of server CPU per 100 watches, against 0.9 and
    0.8), whose text does not depend on the batch size, so psycopg prepares it."""
    t = Watch.__table__
    if is_sqlite(ctx.engine):
        return (sa.update(t).where(t.c.id == sa.bindparam("wid"), t.c.lease_owner == ctx.owner)
                .values(last_poll_at=sa.bindparam("now"), last_poll_error=None, next_poll_at=sa.bindparam("next"),
                        lease_owner=None, lease_expires_at=None), idle)
    stamp = sa.DateTime(timezone=True)
    rows = (sa.func.unnest(sa.bindparam("wids", type_=ARRAY(sa.Integer)), sa.bindparam("nexts", type_=ARRAY(stamp)))
            .table_valued("wid", sa.column("next", stamp)).render_derived())
    stmt = (sa.update(t).where(t.c.id == rows.c.wid, t.c.lease_owner == ctx.owner)
            .values(last_poll_at=now, last_poll_error=None, next_poll_at=rows.c.next, lease_owner=None,
                    lease_expires_at=None))
    return stmt, {"wids": [r["wid"] for r in idle], "nexts": [r["next"] for r in idle]}


def next_poll_at(watch_id: int, interval_seconds: int, now: datetime) -> datetime:
    """The next poll on the watch's own phase: the first time at least half an interval from now that is
    ``phase`` seconds past a multiple of the interval, where ``phase`` is a stable hash of the watch id.

    Watches created together (an import, a restore, 10,000 at once) would otherwise poll in the same
    second every interval forever; with a phase each, polls spread evenly over the interval and stay
    there. The first gap after creation or "poll now" is between 0.5 and 1.5 intervals, then exactly one."""
    interval = max(1, interval_seconds)
    phase = (watch_id * 2654435761 % 2**32) / 2**32 * interval  # Knuth's multiplicative hash: evenly spread
    ts = now.timestamp()
    t = (int((ts - phase) // interval) + 1) * interval + phase
    if t - ts < interval / 2:
        t += interval
    return datetime.fromtimestamp(t, UTC)


def _finish_poll(ctx: Context, watch_id: int, error: str | None) -> None:
    metrics.POLLS.labels(result="error").inc()
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, watch_id)
        if w is None:
            return
        now = utcnow()
        w.last_poll_at = now
        w.last_poll_error = error
        w.next_poll_at = next_poll_at(w.id, w.interval_seconds, now)
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
        w.next_poll_at = next_poll_at(w.id, w.interval_seconds, now)
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


# What a step answers: False (stop here: nothing more is due now), True (advanced: look at the post
# again), a post status (advanced to it and due now, with the lease still ours, all read in the step's own
# last transaction, so the loop need not read it again), or RELEASED (stop: the step's last transaction
# already dropped the lease, so the loop's release would be a transaction for nothing).
RELEASED = "released"


def process_post(ctx: Context, post_id: int) -> None:
    """Run the post's due steps one after another while we hold its lease."""
    known: str | None = None  # the post's status as the last step committed it (then due, lease ours)
    for _ in range(8):  # bounded: at most every step once, plus publish rounds
        if known is not None:
            status, due = known, True
        else:
            with session_scope(ctx.engine) as s:
                post = s.get(Post, post_id)
                if post is None or post.lease_owner != ctx.owner:
                    return
                status = post.status
                due = post.next_attempt_at <= utcnow()
        if status not in states.POST_ACTIVE or not due:
            break
        step = {states.DETECTED: _download, states.DOWNLOADED: _caption, states.AWAITING_REVIEW: _review_due,
                states.CAPTIONED: _publish, states.PUBLISHING: _publish}[status]
        try:
            advanced = step(ctx, post_id)
        except Exception as exc:  # noqa: BLE001 - a bug must fail one post visibly, not kill the worker
            if connection_lost(exc):
                raise  # not the post's fault: the daemon hands the lease back, the step is redone from its state
            log.exception("post.step_crashed", extra=fields(post_id=post_id, status=status))
            _step_failed(ctx, post_id, status, StepError(f"internal error: {exc!r}"))
            advanced = False
        if advanced == RELEASED:
            return
        if not advanced:
            break
        known = advanced if isinstance(advanced, str) else None
    _release(ctx, post_id)


def _release(ctx: Context, post_id: int) -> None:
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).where(Post.id == post_id, Post.lease_owner == ctx.owner)
                  .values(lease_owner=None, lease_expires_at=None))


def _next(ctx: Context, post: Post) -> str | bool:
    """A step's answer once it advanced ``post`` (in the step's last transaction): its new status when the
    lease is still ours and it is due now, else True (the loop reads it again)."""
    if post.lease_owner == ctx.owner and post.next_attempt_at <= utcnow():
        return post.status
    return True


def _load(s: Session, post_id: int) -> tuple[Post, Watch, User]:
    """The post with its watch and owner, in one statement (each step reads them; three were 15 statements
    a photo). Both keys are NOT NULL foreign keys, so the inner joins lose nothing."""
    row = s.exec(select(Post, Watch, User).join(Watch, Watch.id == Post.watch_id)
                 .join(User, User.id == Post.user_id).where(Post.id == post_id)).first()
    return tuple(row) if row is not None else (None, None, None)


def _download(ctx: Context, post_id: int) -> bool:
    with session_scope(ctx.engine) as s:
        post, w, _ = _load(s, post_id)
        ref, source_ref, source_name, fit = _watch_ref(w), post.source_ref, w.source, w.fit
        platforms = set(s.exec(select(PostTarget.platform).where(PostTarget.post_id == post_id)))
        chosen_types = w.image_types
    media = ctx.media
    raw, work, key = media.work_path(post_id, "download"), media.work_path(post_id, "prepared"), post_key(post_id)
    # A copy for each destination that does not take the photo's shape, from the same decode (images.py).
    fitted = {p: media.work_path(post_id, f"{p}.prepared") for p in platforms if p in images.ASPECT_LIMITS}
    # A source reached through an account (Drive) shares that account's pause: rate limits and outages
    # hold its posts (no attempt spent, reason shown) instead of each post failing the same way.
    scope = f"connection:{ref.connection_id}" if ref.connection_id is not None else None
    probing = False
    if scope is not None:
        with session_scope(ctx.engine) as s:
            admission = pauses.admit(s, scope, f"{ctx.owner}:post:{post_id}",
                                     probe_seconds=ctx.cfg.daemon.lease_seconds)
            if admission.held:
                pauses.hold_post(s, post_id, scope, admission.until, admission.reason)
                return False
            probing = admission.probing
    try:
        ctx.source(source_name).fetch(ref, source_ref, raw, ctx.cfg.images.max_file_bytes)
        if chosen_types:
            _check_type(raw, chosen_types)
        digest = _sha256(raw)
        im = ctx.cfg.images
        prepared = images.prepare(raw, work, max_pixels=im.max_pixels, max_edge=im.max_edge,
                                  quality=im.jpeg_quality, max_bytes=im.max_file_bytes,
                                  budget=images.decode_budget(im.decode_memory_mb * 1024 * 1024),
                                  fitted=fitted, fit=fit)
        for platform, path in prepared.fitted.items():
            media.put(post_key(post_id, platform), path)
        media.put(key, work)  # last: a post with its main image has its fitted copies too
        if probing:  # the account works again: release everything its pause held
            with session_scope(ctx.engine) as s:
                pauses.lift(s, scope, "a download succeeded")
    except StepError as exc:
        metrics.count_error("download", source_name, exc)
        if exc.permanent and exc.code in SOURCE_GONE:
            _skip_gone(ctx, post_id, exc)
        elif scope is not None and not exc.permanent and exc.code in CONNECTION_FAULTS:
            with session_scope(ctx.engine) as s:
                p = pauses.pause(s, ctx.cfg, scope, exc, connection_id=ref.connection_id)
                pauses.hold_post(s, post_id, scope, p.until, pauses.describe(p))
        else:
            _step_failed(ctx, post_id, states.DETECTED, exc)
        return False
    finally:
        for path in (raw, work, *fitted.values()):
            path.unlink(missing_ok=True)
    # The content hash is claimed in the same transaction that records the download: nothing external
    # happens between the two (the bytes are our own), and one commit fewer per photo. A duplicate is found
    # after its (wasted, local) preparation instead of before; duplicates are rare.
    for _ in range(3):
        try:
            with session_scope(ctx.engine) as s:
                s.execute(sa.update(Post).where(Post.id == post_id).values(content_hash=digest))
                post = s.get(Post, post_id)
                # A retried post keeps the captions it already had: no second LLM call. A post whose image
                # went missing mid-publish goes back to publishing (its targets keep their state).
                started = s.execute(sa.select(sa.func.count()).select_from(PostTarget).where(
                    PostTarget.post_id == post_id, PostTarget.status != states.T_PENDING)).scalar()
                post.status = (states.PUBLISHING if post.captions and started else
                               states.CAPTIONED if post.captions else states.DOWNLOADED)
                post.media_key = key
                post.media_bytes = prepared.bytes
                post.width, post.height = prepared.width, prepared.height
                post.capture_time = prepared.capture_time
                _advance(post)
                add_event(s, post_id, states.DOWNLOADED,
                          f"{prepared.source_format} image prepared as {prepared.width}x{prepared.height} "
                          "JPEG, metadata removed")
                following = _next(ctx, post)
        except sa.exc.IntegrityError:
            # The unique index (watch_id, content_hash) decides, so two workers downloading two copies of
            # one photo at once cannot both go on.
            with session_scope(ctx.engine) as s:
                other = s.exec(select(Post).where(Post.watch_id == ref.id, Post.content_hash == digest,
                                                  Post.id != post_id)).first()
            if other is not None:
                _skip_duplicate(ctx, post_id, other)  # deletes the prepared image with the post's media
                return False
            continue  # the other post ended (failed or skipped) and released the hash meanwhile: again
        log.info("post.downloaded", extra=fields(post_id=post_id, bytes=prepared.bytes))
        return following
    media.delete_post(post_id)
    _step_failed(ctx, post_id, states.DETECTED, StepError("could not record the photo's content hash",
                                                          code="conflict"))
    return False


# A file that left the source before it was downloaded (trashed in Drive), or whose image type the watch
# does not take: skipped with the reason, not failed.
SOURCE_GONE = ("trashed", "type_not_taken")


def _check_type(path: Path, column: str) -> None:
    """A watch that chose its image types posts only those (a local folder's files are known by their
    decoded format; Drive's are filtered by MIME type before, and checked here again by their bytes)."""
    fmt = images.format_of(path)
    mimes = image_types.of_format(fmt)
    if fmt is None or any(m in image_types.from_column(column) for m in mimes):
        return  # not identified: prepare() says what is wrong
    raise SourceError(image_types.not_taken(mimes[0] if mimes else fmt, column, ()), permanent=True,
                      code="type_not_taken")
# Faults of the account behind a source, shared by all its posts (issue 7's pauses).
CONNECTION_FAULTS = ("timeout", "connection", "server_error", "overloaded", "rate_limited", "quota")


def _skip_gone(ctx: Context, post_id: int, exc: StepError) -> None:
    reason = f"not posted: {exc}"
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id)):
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, reason, utcnow()
        post.last_error = reason
        _finish(s, ctx, post, states.SKIPPED, reason)


def _media_missing(ctx: Context, post_id: int, key: str | None) -> bool:
    """The prepared image is gone (e.g. the media directory was wiped): download it again, not fail."""
    if key is not None and ctx.media.exists(key):
        return False
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        post.status = states.DETECTED
        post.media_key = None
        add_event(s, post_id, states.DETECTED, "prepared image missing; downloading again")
    return True


def _sha256(path: Path) -> str:
    """The content identity of a downloaded file (~3 ms for a 5 MB photo, from the page cache)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
    post.paused_by = None
    post.last_error = None
    post.next_attempt_at = utcnow()
    post.updated_at = utcnow()


def _caption(ctx: Context, post_id: int) -> bool:
    with session_scope(ctx.engine) as s:
        post, w, user = _load(s, post_id)
        name = w.captioner or ctx.cfg.captioner.default
        platforms = [t.platform for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id))]
        key = post.media_key
        req = CaptionRequest(
            image_path=ctx.media.local_path(key) if key else None, file_name=post.file_name,
            folder_name=post.folder_name,
            platforms=platforms, description=post.description, capture_date=post.capture_time,
            prompt_template=w.prompt_template, brand_voice=user.brand_voice,
            default_hashtags=list(user.default_hashtags or []), revision_note=post.review_note or "",
        )
        # A captioner fault is a fault of the whole provider: it is paused in the database for every replica
        # (see core/pauses.py), and posts wait for it instead of each failing the same way. Admitted in the
        # transaction that read the post: committed before the captioner is called, one commit fewer.
        scope, fingerprint = f"captioner:{name}", pauses.captioner_fingerprint(ctx.cfg, name)
        admission = pauses.admit(s, scope, f"{ctx.owner}:post:{post_id}", fingerprint=fingerprint,
                                 probe_seconds=ctx.cfg.daemon.lease_seconds)
        if admission.held:
            pauses.hold_post(s, post_id, scope, admission.until, admission.reason)
            return False
    if _media_missing(ctx, post_id, key):
        return True
    try:
        result = metrics.timed(metrics.LLM_LATENCY.labels(captioner=name), ctx.captioner(name).caption, req)
    except CaptionError as exc:
        metrics.count_error("caption", name, exc)
        if pauses.pauses_adapter(exc):
            with session_scope(ctx.engine) as s:
                p = pauses.pause(s, ctx.cfg, scope, exc, fingerprint=fingerprint)
                pauses.hold_post(s, post_id, scope, p.until, pauses.describe(p))
                add_event(s, post_id, states.DOWNLOADED, f"captioner {name} paused: {exc}")
            return False
        if admission.probing:  # the provider answered; this image is the problem, not the provider
            with session_scope(ctx.engine) as s:
                pauses.lift(s, scope, f"post {post_id} reached the provider")
        _step_failed(ctx, post_id, states.DOWNLOADED, exc)
        return False
    if admission.probing:
        with session_scope(ctx.engine) as s:
            pauses.lift(s, scope, f"post {post_id} was captioned")
    with session_scope(ctx.engine) as s:
        post, w, _ = _load(s, post_id)
        post.status = states.CAPTIONED
        post.captioner = name
        post.captions = dict(result.captions)
        post.hashtags = list(result.hashtags)
        post.alt_text = result.alt_text
        post.usage = review.add_usage(post.usage, result.usage, again=post.review_expires_at is not None)
        _advance(post)
        tokens = ""
        if result.usage.get("input_tokens") is not None:
            tokens = f" ({result.usage.get('input_tokens')} in / {result.usage.get('output_tokens')} out tokens)"
        add_event(s, post_id, states.CAPTIONED, f"captioned by {name}{tokens}")
        if w.approval == "review" or post.review_expires_at is not None:  # nothing goes out unapproved
            review.hold_for_review(s, post, w)
            return False
        following = _next(ctx, post)
    log.info("post.captioned", extra=fields(post_id=post_id, captioner=name))
    return following


def _step_failed(ctx: Context, post_id: int, status: str, exc: StepError) -> None:
    step = {states.DETECTED: "download", states.DOWNLOADED: "caption"}.get(status, "publish")
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        post.step_attempts += 1
        decision = ctx.backoff(step).decide(post.step_attempts, exc, utcnow())
        if isinstance(decision, GiveUp):
            _fail_post(s, ctx, post, f"{step} failed: {decision.reason}")
            log.warning("post.failed", extra=fields(post_id=post_id, step=step, error=decision.reason))
        else:
            post.next_attempt_at = decision.at
            # Publishing failures are per target; this is a round that broke as a whole (a bug).
            post.last_error = f"{step}: {decision.reason}" if step != "publish" else \
                f"publish round failed: {decision.reason}"
            post.updated_at = utcnow()
            add_event(s, post_id, post.status, post.last_error)
            log.info("post.retry", extra=fields(post_id=post_id, step=step, delay=round(decision.delay, 1),
                                                error=str(exc)))


def _fail_post(s: Session, ctx: Context, post: Post, reason: str) -> None:
    for t in s.exec(select(PostTarget).where(PostTarget.post_id == post.id)):
        if t.status == states.T_PENDING:
            t.status, t.last_error, t.updated_at = states.T_FAILED, f"not attempted: {reason}", utcnow()
        elif t.status == states.T_PUBLISHING:
            t.status, t.updated_at = states.T_FAILED, utcnow()
            t.last_error = f"interrupted ({reason}); check the account before retrying this target"
    post.status = states.FAILED
    post.last_error = reason
    _finish(s, ctx, post, states.FAILED, reason)


def _finish(s: Session, ctx: Context, post: Post, status: str, message: str) -> None:
    post.status = status
    post.finished_at = post.updated_at = utcnow()
    post.next_attempt_at = utcnow()
    post.media_key = None
    if status in (states.FAILED, states.SKIPPED):
        post.content_hash = None  # never posted: the same bytes dropped again get another chance
    add_event(s, post.id, status, message)
    notify.post_finished(s, post, status)  # queued only (a row); the daemon sends it off this path
    # Image bytes live only while a post is in flight. If we crash between this commit and the delete,
    # the housekeeping sweep deletes the file instead.
    s.commit()
    ctx.media.delete_post(post.id)


# --------------------------------------------------------------------------- publishing


def _publish(ctx: Context, post_id: int) -> bool:
    now = utcnow()
    with session_scope(ctx.engine) as s:
        post, w, _ = _load(s, post_id)
        key = post.media_key
        if post.status == states.CAPTIONED:
            # An approved post (review) goes out however long its review took: the owner chose it.
            if w.maximum_age_hours > 0 and post.source_time and post.review_expires_at is None and \
                    now - post.source_time > timedelta(hours=w.maximum_age_hours):
                reason = (f"waited {_ago(now - post.source_time)} since the file arrived, longer than the "
                          f"watch's maximum_age of {w.maximum_age_hours:g} h; not posted")
                for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id)):
                    t.status, t.last_error = states.T_SKIPPED, reason
                post.last_error = reason
                _finish(s, ctx, post, states.SKIPPED, reason)
                return False
            # The posting schedule (windows, daily caps); publish-now skips it, min_spacing still holds.
            wait = None if post.skip_schedule else schedule.gate(s, w, post, now)
            if wait is not None:
                post.next_attempt_at, post.last_error, post.updated_at = wait.until, wait.reason, now
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
            post.released_at = now
            post.status = states.PUBLISHING
            post.last_error = None
            add_event(s, post_id, states.PUBLISHING, "publishing to " + ", ".join(
                t.platform for t in s.exec(select(PostTarget).where(PostTarget.post_id == post_id))))
        targets = [t.id for t in s.exec(
            select(PostTarget).where(PostTarget.post_id == post_id,
                                     PostTarget.status.in_((states.T_PENDING, states.T_PUBLISHING)),
                                     PostTarget.next_attempt_at <= now).order_by(PostTarget.id))]
    if targets and _media_missing(ctx, post_id, key):
        return True
    carry: list = []  # a target's "published" record, committed with the next target's first transaction
    for i, target_id in enumerate(targets):
        # The last target's outcome and the post's settling share one transaction when it published.
        settled = _publish_target(ctx, post_id, target_id, settle=i == len(targets) - 1, carry=carry)
    if targets and settled is not None:
        return settled
    return _settle(ctx, post_id, carry)


def _review_due(ctx: Context, post_id: int) -> bool:
    """An unreviewed post came due: its review time ran out (expire it, deleting its image)."""
    with session_scope(ctx.engine) as s:
        post = s.get(Post, post_id)
        if post.status != states.AWAITING_REVIEW:
            return True
        if review.expire_if_due(s, post, utcnow()):
            _finish(s, ctx, post, states.EXPIRED, post.last_error or "expired")
        return False


def _request(ctx: Context, s: Session, post: Post, t: PostTarget) -> PublishRequest:
    # The owner's approved or edited text (review) is published exactly; otherwise the generated one.
    caption = t.caption if t.caption is not None else (
        post.captions.get(t.platform) or next(iter(post.captions.values()), ""))
    variant = _fitted_variant(ctx, s, post, t.platform)
    return PublishRequest(
        post_id=post.id, target_id=t.id, platform=t.platform,
        media_path=ctx.media.local_path(post_key(post.id, variant) if variant else post.media_key),
        media_url=ctx.media_urls.url(post.id, utcnow(), variant) if ctx.media_urls else None,
        caption=caption, alt_text=post.alt_text, file_name=post.file_name, connection_id=t.connection_id,
        handle=dict(t.handle) if t.handle is not None else None, attempt_started_at=t.attempt_started_at,
        checkpoint=partial(_checkpoint, ctx, t.id))


def _fitted_variant(ctx: Context, s: Session, post: Post, platform: str) -> str | None:
    """The media variant this destination gets (its copy brought into its aspect range), or None for the
    prepared image itself. The copy is made with the image (_download); a post prepared before it needed
    one (or whose copy went missing) gets it now, from the small prepared JPEG."""
    if not images.needs_fit(platform, post.width, post.height):
        return None
    key = post_key(post.id, platform)
    if ctx.media.exists(key):
        return platform
    work = ctx.media.work_path(post.id, f"{platform}.prepared")
    try:
        images.fit_file(ctx.media.local_path(post.media_key), work, platform, s.get(Watch, post.watch_id).fit,
                        max_pixels=ctx.cfg.images.max_pixels, quality=ctx.cfg.images.jpeg_quality)
        ctx.media.put(key, work)
    except (images.ImageError, OSError) as exc:  # the destination then judges the image as it is
        log.warning("post.fit_failed", extra=fields(post_id=post.id, platform=platform, error=str(exc)))
        return None
    finally:
        work.unlink(missing_ok=True)
    return platform


def _checkpoint(ctx: Context, target_id: int, handle: dict) -> None:
    """Commit a publisher's handle now, in its own transaction, before its next irreversible call."""
    handle = json.loads(json.dumps(handle))  # JSON or nothing: it must survive the database
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        t.handle = handle
        container = handle.get("container_id")
        if container and str(container) != t.container_id:
            t.container_id = str(container)
            add_event(s, t.post_id, states.T_PUBLISHING, f"{t.platform}: container {container} created",
                      target_id)
        t.updated_at = utcnow()


def _publish_target(ctx: Context, post_id: int, target_id: int, settle: bool = False,
                    carry: list | None = None) -> str | bool | None:
    """One step of one target. ``settle``: when it publishes, settle the post in the same transaction and
    answer as :func:`_settle`; None when it did not settle.

    ``carry``: records of earlier targets' outcomes not yet committed; they are written first in this
    target's first transaction. When given (and not settling), this target's own "published" record is
    appended to it instead of committed on its own: nothing external happens between it and the next
    target's first transaction (or the post's settling), which commits it before any further platform
    call. Lost in a crash, the target is still in flight and is reconciled (found published) first."""
    with session_scope(ctx.engine) as s:
        while carry:
            carry.pop(0)(s)
        # Read once and kept referenced, so the hold check, the request and the attempt below share them
        # (the session's identity map holds objects weakly).
        t = s.get(PostTarget, target_id)
        conn = s.get(Connection, t.connection_id) if t is not None and t.connection_id is not None else None
        if credentials.hold_target_in(s, ctx.cfg, target_id, ctx.owner):
            return None  # its account needs re-authorization, or its destination or account is paused
        post = s.get(Post, post_id)
        platform = t.platform
        req = _request(ctx, s, post, t)
        interrupted = t.status == states.T_PUBLISHING and t.step_started_at is not None
        fresh = t.handle is None
        attempts = t.attempts
        publisher, problem = _publisher_for(ctx, platform, req)
        if publisher is not None and not interrupted:
            # Nothing external happens between reading the target and marking it in flight, so both share
            # this transaction; it commits before the platform call.
            if conn is not None and ctx.credentials is not None:
                try:
                    req.credentials = ctx.credentials.load_in(s, conn.id)
                except credentials.CredentialsError:
                    pass  # the adapter loads them itself and reports why it cannot
            if not _begin_attempt(ctx, s, t, fresh, attempts, req):
                return None
    if problem is not None:
        hold_exc, failure = problem
        if hold_exc is None or not _hold(ctx, target_id, hold_exc, in_flight=interrupted):
            _target_failed(ctx, target_id, failure)
        return None

    if interrupted:
        # The last step may have reached the platform: ask before sending anything again.
        try:
            outcome = publisher.recover(req)
        except PublishError as exc:
            if exc.ambiguous or exc.permanent:
                _target_failed(ctx, target_id, PublishError(
                    f"an earlier attempt was interrupted and its outcome cannot be confirmed ({exc}); not "
                    "re-sent to avoid a duplicate: check the account, then retry this target",
                    permanent=True, code="outcome_unknown"))
                return
            if _hold(ctx, target_id, exc, in_flight=True):
                return
            _target_failed(ctx, target_id, exc, count=True, in_flight=True)  # ask again later
            return
        except Exception as exc:  # noqa: BLE001 - a bug in the adapter: bounded like any failure
            log.exception("target.recover_crashed", extra=fields(post_id=post_id, target_id=target_id))
            _target_failed(ctx, target_id, _internal(exc), count=True, in_flight=True)
            return
        if isinstance(outcome, Published):
            return _target_published(ctx, target_id, outcome, "confirmed after an interrupted attempt",
                                     settle=post_id if settle else None)
        if isinstance(outcome, Pending):
            _target_pending(ctx, target_id, outcome, "found in progress after an interrupted attempt")
            return
        if outcome is not None:
            _target_failed(ctx, target_id, _internal(TypeError(f"recover returned {outcome!r}")), count=True,
                           in_flight=True)
            return
        req.handle, fresh = None, True  # surely nothing out there: a new attempt cannot duplicate
        # Committed before the call: if we die during it, the next round recovers first.
        with session_scope(ctx.engine) as s:
            if not _begin_attempt(ctx, s, s.get(PostTarget, target_id), fresh, attempts, req):
                return None
    try:
        outcome = metrics.timed(metrics.PLATFORM_LATENCY.labels(platform=platform), publisher.publish, req)
    except PublishError as exc:
        if exc.ambiguous:
            # Left in flight: the next round reconciles through recover() first.
            metrics.count_error("publish", platform, exc)
            with session_scope(ctx.engine) as s:
                t = s.get(PostTarget, target_id)
                t.last_error = f"outcome unknown, will check before retrying: {exc}"
                t.next_attempt_at = utcnow() + timedelta(seconds=ctx.cfg.retry.base_delay_seconds)
                add_event(s, post_id, states.T_PUBLISHING, t.last_error, target_id)
            return
        if _hold(ctx, target_id, exc, uncount=fresh):
            return
        _target_failed(ctx, target_id, exc, count=not fresh)
        return
    except Exception as exc:  # noqa: BLE001 - a bug in the adapter: it counts as an attempt, and since we
        # cannot tell how far it got, the target stays in flight so that the next round recovers first.
        log.exception("target.step_crashed", extra=fields(post_id=post_id, target_id=target_id))
        _target_failed(ctx, target_id, _internal(exc), count=not fresh, in_flight=True)
        return
    if isinstance(outcome, Published):
        if carry is not None and not settle:
            carry.append(partial(_record_published, target_id=target_id, result=outcome,
                                 message=f"published on {platform}", at=utcnow()))
            return None
        return _target_published(ctx, target_id, outcome, f"published on {platform}",
                                 settle=post_id if settle else None)
    elif isinstance(outcome, Pending):
        _target_pending(ctx, target_id, outcome)
    else:
        _target_failed(ctx, target_id, _internal(TypeError(f"publish returned {outcome!r}")),
                       count=not fresh, in_flight=True)


def _publisher_for(ctx: Context, platform: str,
                   req: PublishRequest) -> tuple[Any, tuple[StepError | None, PublishError] | None]:
    """The destination's publisher, or why there is none: ``(error that may hold the target, failure)``.
    No database work: it runs inside the transaction that reads the target."""
    try:
        dest = registry.destination(platform)
    except registry.UnknownAdapter as exc:
        return None, (None, PublishError(str(exc), permanent=True, code="config"))
    if dest.provider is not None and req.connection_id is None:
        return None, (None, PublishError(f"the {platform} account was disconnected; reconnect it and retry",
                                         permanent=True, code="no_connection"))
    try:
        return ctx.publisher(platform), None
    except StepError as exc:  # the destination's fault may hold the target (see _hold); else it fails
        return None, (exc, PublishError(f"publisher unavailable: {exc}", permanent=True, code="config"))
    except Exception as exc:  # noqa: BLE001 - unavailable, misconfigured or broken: this target fails
        return None, (None, PublishError(f"publisher unavailable: internal error: {exc!r}", permanent=True,
                                         code="config"))


def _begin_attempt(ctx: Context, s: Session, t: PostTarget, fresh: bool, attempts: int,
                   req: PublishRequest) -> bool:
    """Mark the target in flight (a fresh attempt counted), in the caller's transaction; False when it has
    used its attempts (then it is failed instead)."""
    now = utcnow()
    if fresh and attempts >= ctx.cfg.retry.publish_attempts:
        # Only reachable after outcomes that were unknown, then confirmed as not published.
        t.status, t.step_started_at = states.T_FAILED, None
        t.last_error = f"{t.platform}: gave up after {attempts} attempts: {t.last_error or 'no outcome'}"
        t.updated_at = now
        add_event(s, t.post_id, t.status, t.last_error, t.id)
        return False
    t.status = states.T_PUBLISHING
    t.step_started_at = now
    if fresh:
        t.attempts += 1
        t.handle, t.container_id, t.pending_since, t.attempt_started_at = None, None, None, now
        add_event(s, t.post_id, states.T_PUBLISHING, f"{t.platform}: attempt {t.attempts}", t.id)
    t.updated_at = now
    req.attempt_started_at = t.attempt_started_at
    return True


# Faults of an account or a destination rather than of the post: the target waits for them (shared pause,
# reason shown, no attempt spent) instead of failing. See docs/publishing.md, "Errors → pipeline".
_HOLD_CODES = ("auth", "rate_limited", "quota", "config")


def _hold(ctx: Context, target_id: int, exc: StepError, *, in_flight: bool = False, uncount: bool = False) -> bool:
    """Hold the target for its account or destination when ``exc`` is theirs; False when it is the post's.

    * ``auth`` (token expired or revoked, permission removed): the connection is marked ``needs_reauth``
      and its targets wait until it is reconnected (which lifts ``connection:<id>`` and releases them);
    * ``rate_limited``/``quota``: the account (``connection:<id>``) waits until the window frees;
    * ``config`` (no public URL, a proxy in front of the media route, a missing app secret): the
      destination (``destination:<platform>``) waits until it is fixed; a person is told why.

    ``in_flight``: the interrupted step is still unreconciled, so the target stays in flight and recovers
    first when released. ``uncount``: the attempt counted when this step began is given back."""
    code = exc.code or ""
    if code not in _HOLD_CODES or (code == "config" and exc.permanent):
        return False
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        cid = t.connection_id
        if code in ("auth", "rate_limited", "quota") and cid is not None:
            scope = f"connection:{cid}"
        else:
            scope = f"destination:{t.platform}"
        if code == "auth" and cid is not None:
            credentials.mark(s, ctx.cfg, cid, credentials.NEEDS_REAUTH, str(exc))
            p = pauses.get(s, scope)
        else:
            p = pauses.pause(s, ctx.cfg, scope, exc, connection_id=cid if scope.startswith("connection") else None)
        reason = pauses.describe(p) if p is not None else f"waiting: {exc}"
        pauses.hold_target(s, target_id, scope, p.until if p is not None else utcnow(), reason)
        if not in_flight:
            t.status, t.step_started_at = states.T_PENDING, None
        if uncount and t.attempts > 0:
            t.attempts -= 1
        metrics.count_error("publish", t.platform, exc)
        add_event(s, t.post_id, t.status, f"{t.platform}: {reason}", target_id)
    log.warning("target.held", extra=fields(target_id=target_id, scope=scope, code=code, error=str(exc)))
    return True


def _internal(exc: Exception) -> PublishError:
    return PublishError(f"internal error: {exc!r}", code="internal")


def _target_published(ctx: Context, target_id: int, result: Published, message: str,
                       settle: int | None = None) -> str | bool | None:
    """Record the target as published; with ``settle`` (its post's id), settle that post in the same
    transaction (nothing external happens between the two) and answer as :func:`_settle`."""
    settled = None
    with session_scope(ctx.engine) as s:
        _record_published(s, target_id, result, message, utcnow())
        if settle is not None:
            settled = _settle_in(s, ctx, settle)
    return settled


def _record_published(s: Session, target_id: int, result: Published, message: str, at: datetime) -> None:
    t = s.get(PostTarget, target_id)
    t.status = states.T_PUBLISHED
    t.platform_post_id = result.platform_post_id
    t.platform_url = result.url
    t.published_at = t.updated_at = at
    t.step_started_at = t.pending_since = None
    t.last_error = None
    add_event(s, t.post_id, states.T_PUBLISHED, f"{message}: {result.platform_post_id}", target_id)
    log.info("target.published", extra=fields(post_id=t.post_id, target_id=target_id, platform=t.platform,
                                              platform_post_id=result.platform_post_id))


def _target_pending(ctx: Context, target_id: int, pending: Pending, message: str = "") -> None:
    """The platform is still working (a container processing): keep the handle, free the worker, look
    again later; fail with the platform's last status once the wait exceeds its bound."""
    now = utcnow()
    handle = json.loads(json.dumps(pending.handle))
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        t.handle = handle
        if handle.get("container_id"):
            t.container_id = str(handle["container_id"])
        t.status, t.step_started_at = states.T_PUBLISHING, None
        t.pending_since = t.pending_since or now
        t.updated_at = now
        waited = (now - t.pending_since).total_seconds()
        bound = ctx.cfg.retry.publish_max_wait_seconds
        if waited > bound:
            t.status = states.T_FAILED
            t.last_error = (f"{t.platform}: still not done after waiting {waited:.0f}s (retry."
                            f"publish_max_wait_seconds = {bound:g}); last status: {pending.reason}")
            add_event(s, t.post_id, t.status, t.last_error, target_id)
            log.warning("target.failed", extra=fields(post_id=t.post_id, target_id=target_id,
                                                      platform=t.platform, error=t.last_error))
            return
        wait = max(0.0, min(float(pending.wait_seconds), bound - waited))
        t.next_attempt_at = now + timedelta(seconds=wait)
        reason = f"waiting: {t.platform}: {pending.reason}"
        if message or not (t.last_error or "").startswith(reason):
            add_event(s, t.post_id, states.T_PUBLISHING, f"{reason}{f' ({message})' if message else ''}",
                      target_id)
        t.last_error = f"{reason}; checking again at {t.next_attempt_at:%H:%M:%S} UTC"


def _target_failed(ctx: Context, target_id: int, exc: StepError, *, count: bool = False,
                   in_flight: bool = False) -> None:
    """A step failed. ``count``: it counts as an attempt of its own (a fresh attempt was counted when it
    began). ``in_flight``: we cannot tell how far it got, so the next round recovers before anything else."""
    with session_scope(ctx.engine) as s:
        t = s.get(PostTarget, target_id)
        metrics.count_error("publish", t.platform, exc)
        if count:
            t.attempts += 1
        decision = ctx.backoff("publish").decide(max(t.attempts, 1), exc, utcnow())
        if isinstance(decision, GiveUp):
            t.status = states.T_FAILED
            t.step_started_at = None
            t.last_error = f"{t.platform}: {decision.reason}"
            log.warning("target.failed", extra=fields(post_id=t.post_id, target_id=target_id,
                                                      platform=t.platform, error=decision.reason))
        else:
            if in_flight:
                t.status = states.T_PUBLISHING  # step_started_at stays: recover first
            else:
                # Back to pending; a handle (a container made by an earlier step) is kept and continued.
                t.status, t.step_started_at = states.T_PENDING, None
            t.next_attempt_at = decision.at
            t.last_error = f"{t.platform}: {decision.reason}"
        t.updated_at = utcnow()
        add_event(s, t.post_id, t.status, t.last_error, target_id)


def _settle(ctx: Context, post_id: int, carry: list | None = None) -> str | bool:
    """Finish the post when every target is done; otherwise schedule the next round. ``carry``: records
    of targets' outcomes still to be written (see :func:`_publish_target`), written first."""
    with session_scope(ctx.engine) as s:
        while carry:
            carry.pop(0)(s)
        return _settle_in(s, ctx, post_id)


def _settle_in(s: Session, ctx: Context, post_id: int) -> str | bool:
    """:func:`_settle` in the caller's transaction. The round ends here either way, so the post's lease is
    dropped in the same transaction (RELEASED) instead of in one of its own."""
    post = s.get(Post, post_id)
    released = post.lease_owner == ctx.owner
    ts = list(s.exec(select(PostTarget).where(PostTarget.post_id == post_id)))
    open_ = [t for t in ts if t.status not in states.TARGET_TERMINAL]
    if open_:
        post.next_attempt_at = min(t.next_attempt_at for t in open_)
        errors = [t.last_error for t in open_ if t.last_error]
        post.last_error = errors[0] if errors else None
        post.updated_at = utcnow()
        if released and post.next_attempt_at <= post.updated_at:
            return states.PUBLISHING  # a step is due again now (a container just made): keep going
        if released:
            post.lease_owner = post.lease_expires_at = None
        return RELEASED if released else False
    if released:
        post.lease_owner = post.lease_expires_at = None
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
    return RELEASED if released else False
