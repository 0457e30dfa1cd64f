"""Drive detection in the daemon: one change feed per connection, claimed from the database like a watch.

A ``drive_feed`` row per Drive connection holds its page token, when it is next due (the shortest interval
of the connection's enabled watches) and a lease. A claimed feed is polled with one ``changes.list``
(:func:`~aiposter.sources.google_drive.feed.poll_changes`), so an idle poll costs one request however
many folders the account watches. In one transaction the poll then

* records each event per watch with :func:`~aiposter.sources.google_drive.feed.classify` against what
  the watch has seen (``source_file`` rows: ref = Drive file id, fingerprint = md5): ``new`` becomes a
  ``source_file`` and a post through the pipeline's own post creation (arrival = when the poll saw it, so
  ``maximum_age`` never drops a photo moved in from an old folder); ``unchanged`` (a rename, a description
  edit, the same bytes again) and ``content_changed`` (not posted again) are recorded; ``duplicate`` (the
  same bytes as another file of the watch) is skipped with that reason;
* skips posts of files that were trashed or removed before they were downloaded, with the reason;
* puts watches whose folder was deleted or became unreadable in ``error`` (the others go on);
* stores the new page token last.

Faults: a refused refresh token marks the connection ``needs_reauth`` (its watches wait, with the reason);
rate limits, 5xx, timeouts pause ``connection:<id>`` (backoff with jitter, ``Retry-After`` honoured) for
the whole connection; a rejected page token is answered with a resync (fresh token, then a listing per
watch compared with what it has seen: nothing is posted twice).

``files.list`` is used only for a watch's baseline (at creation, :func:`baseline_watch`), a backfill, and
the resync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter import metrics
from aiposter.core import credentials, image_types, pauses, states
from aiposter.core.drive_feeds import ensure_feed  # noqa: F401 - re-exported for the services
from aiposter.core.errors import SourceError, StepError
from aiposter.core.models import Connection, DriveFeed, Post, PostTarget, SourceFile, Watch, WatchTarget, utcnow
from aiposter.core.ports import RemoteFile
from aiposter.db import session_scope
from aiposter.logs import fields
from aiposter.sources.google_drive.client import DriveFile
from aiposter.sources.google_drive.errors import ResyncNeeded
from aiposter.sources.google_drive.feed import (
    CONTENT_CHANGED,
    DUPLICATE,
    NEW,
    UNCHANGED,
    FolderEvent,
    FolderListing,
    WatchProblem,
    WatchSpec,
    classify,
    list_watch,
    poll_changes,
    resync,
)
from aiposter.sources.google_drive.source import TRANSIENT_CODES, DriveSource, min_interval

log = logging.getLogger("aiposter.drive")

SOURCE = "google_drive"
WAITING = "waiting: "
LEFT_REASONS = {"trashed": "the file was moved to the trash in Google Drive before it was processed",
                "removed": "the file was deleted in Google Drive (or access to it was lost) before it was processed",
                "moved_out": "the file was moved out of the watched folder before it was processed"}


@dataclass
class FeedResult:
    queued: int = 0
    baseline: int = 0
    skipped: int = 0
    requests: int = 0
    resynced: bool = False
    complete: bool = True
    error: str | None = None
    problems: dict[int, str] = field(default_factory=dict)
    superseded: bool = False  # our lease lapsed and another replica read the feed: it records, we drop ours


def _active_watches(s: Session, connection_id: int) -> list[Watch]:
    return list(s.exec(select(Watch).where(Watch.source == SOURCE, Watch.source_connection_id == connection_id,
                                           Watch.enabled.is_(True)).order_by(Watch.id)))


def _spec(w: Watch) -> WatchSpec:
    return WatchSpec(key=w.id, folder_id=w.folder, include_subfolders=w.include_subfolders,
                     image_types=image_types.from_column(w.image_types), drive_id=w.drive_id)


def _interval(cfg, watches: Iterable[Watch]) -> int:
    return max(min((w.interval_seconds for w in watches), default=300), min_interval(cfg))


# =========================================================================== polling


def poll_feed(ctx, feed_id: int) -> FeedResult:
    """Poll one leased feed: read the connection's changes and record them for every watch."""
    now = utcnow()
    with session_scope(ctx.engine) as s:
        feed = s.get(DriveFeed, feed_id)
        if feed is None or feed.lease_owner != ctx.owner:
            return FeedResult(error="feed not leased")
        cid, token = feed.connection_id, feed.page_token
        stored_token = token
        watches = _active_watches(s, cid)
        specs = [_spec(w) for w in watches]
        interval = _interval(ctx.cfg, watches)
        unusable = credentials.unusable_reason(s.get(Connection, cid), now)
        admission = None if unusable else pauses.admit(s, f"connection:{cid}", f"{ctx.owner}:feed:{cid}", now=now,
                                                      probe_seconds=ctx.cfg.daemon.lease_seconds)
    if unusable or (admission is not None and admission.held):
        reason = f"{WAITING}{unusable}" if unusable else admission.reason
        until = now + timedelta(seconds=interval) if unusable else admission.until
        _wait(ctx, feed_id, [w.id for w in watches], reason, until)
        return FeedResult(error=reason)
    if not specs:
        _finish(ctx, feed_id, [], token, now + timedelta(seconds=interval), 0, None)
        return FeedResult()

    source: DriveSource = ctx.source(SOURCE)
    result = FeedResult()
    try:
        client = source.client(cid)
        before = client.request_count
        pending = [w for w in watches if not w.baseline_done]
        if token is None:
            token = client.start_page_token()
        for w in pending:  # a baseline not taken at creation, or a folder in error being checked again
            listing = _list_or_problem(client, source, cid, _spec(w))
            _record_baseline(ctx, w.id, listing)
            if isinstance(listing, WatchProblem):
                result.problems[w.id] = f"folder: {listing.error}"
        ready = [_spec(w) for w in watches if w.id not in result.problems]
        try:
            feed_poll = poll_changes(client, token, ready, cache=source.cache(cid), seen_at=utcnow())
            events, left, problems = feed_poll.events, feed_poll.left, feed_poll.problems
            new_token, result.complete = feed_poll.new_token, feed_poll.complete
        except ResyncNeeded:
            again = resync(client, ready, cache=source.cache(cid))
            seen_at = utcnow()
            events = [FolderEvent(k, f, seen_at, via="listing") for k, lst in again.listings.items()
                      for f in lst.files]
            left, problems, new_token, result.resynced = {}, again.problems, again.new_token, True
            log.warning("drive.resync", extra=fields(connection_id=cid, watches=len(ready)))
        result.requests = client.request_count - before
    except StepError as exc:
        return _failed(ctx, feed_id, cid, [w.id for w in watches], exc, interval)
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the daemon; the token is not advanced
        log.exception("drive.poll_crashed", extra=fields(connection_id=cid))
        return _failed(ctx, feed_id, cid, [w.id for w in watches], StepError(f"internal error: {exc!r}"), interval)

    _record(ctx, feed_id, stored_token, cid, events, left, problems, result)
    if result.superseded:
        log.info("drive.poll_superseded", extra=fields(connection_id=cid))
        return result
    if admission is not None and admission.probing:
        with session_scope(ctx.engine) as s:
            pauses.lift(s, f"connection:{cid}", "a poll of the account succeeded")
    due = utcnow() if not result.complete else utcnow() + timedelta(seconds=interval)
    _finish(ctx, feed_id, [w.id for w in watches], new_token, due, result.requests, None,
            problems=result.problems)
    metrics.POLLS.labels(result="ok").inc()
    if result.queued or result.skipped or result.problems:
        log.info("drive.polled", extra=fields(connection_id=cid, queued=result.queued, skipped=result.skipped,
                                              requests=result.requests, problems=len(result.problems)))
    return result


def _list_or_problem(client, source, cid, spec: WatchSpec) -> FolderListing | WatchProblem:
    try:
        return list_watch(client, spec, cache=source.cache(cid))
    except SourceError as exc:
        if exc.permanent and exc.code not in ("auth", "config"):
            return WatchProblem(spec.key, exc)
        raise


def _failed(ctx, feed_id: int, cid: int, watch_ids: list[int], exc: StepError, interval: int) -> FeedResult:
    metrics.POLLS.labels(result="error").inc()
    metrics.count_error("poll", SOURCE, exc)
    source = ctx.source(SOURCE)
    now = utcnow()
    if exc.code == "auth":
        source.failed(cid, exc)
        reason = f"{WAITING}the Google Drive account needs to be reconnected: {exc}"
        _wait(ctx, feed_id, watch_ids, reason, now + timedelta(seconds=interval))
    elif exc.code in TRANSIENT_CODES or not exc.permanent:
        with session_scope(ctx.engine) as s:
            p = pauses.pause(s, ctx.cfg, f"connection:{cid}", exc, connection_id=cid, now=now)
            until, reason = p.until, pauses.describe(p, now)
        _wait(ctx, feed_id, watch_ids, reason, until)
    else:
        _wait(ctx, feed_id, watch_ids, str(exc), now + timedelta(seconds=interval))
    log.warning("drive.poll_failed", extra=fields(connection_id=cid, code=exc.code, error=str(exc)))
    return FeedResult(error=str(exc))


def _wait(ctx, feed_id: int, watch_ids: list[int], reason: str, until: datetime) -> None:
    """The feed waits until ``until``; its watches show why. The page token is not touched."""
    with session_scope(ctx.engine) as s:
        feed = s.get(DriveFeed, feed_id)
        if feed is not None:
            feed.last_error, feed.next_poll_at = reason, until
            feed.lease_owner = feed.lease_expires_at = None
            feed.last_poll_at = utcnow()
        if watch_ids:
            s.execute(sa.update(Watch).where(Watch.id.in_(watch_ids))
                      .values(last_poll_error=reason, next_poll_at=until, last_poll_at=utcnow()))


def _finish(ctx, feed_id: int, watch_ids: list[int], token: str | None, due: datetime, requests: int,
            error: str | None, problems: dict[int, str] | None = None) -> None:
    problems = problems or {}
    now = utcnow()
    with session_scope(ctx.engine) as s:
        feed = s.get(DriveFeed, feed_id)
        if feed is None:
            return
        if feed.lease_owner not in (ctx.owner, None):
            return  # our lease expired and another replica polled meanwhile: its token wins
        feed.page_token, feed.next_poll_at, feed.requests = token, due, requests
        feed.last_poll_at, feed.last_error = now, error
        feed.lease_owner = feed.lease_expires_at = None
        for wid in watch_ids:
            w = s.get(Watch, wid)
            if w is None:
                continue
            w.last_poll_at, w.next_poll_at = now, due
            if wid in problems:
                w.last_poll_error = problems[wid]
            elif w.last_poll_error and not _folder_error(w.last_poll_error):
                w.last_poll_error = None


def _folder_error(message: str) -> bool:
    """A folder problem stays until the user points the watch elsewhere (the feed cannot see it heal)."""
    return message.startswith("folder: ")


# =========================================================================== recording


def _seen(s: Session, watch_id: int, ids: list[str]) -> dict[str, SourceFile]:
    out: dict[str, SourceFile] = {}
    for i in range(0, len(ids), 500):
        for sf in s.exec(select(SourceFile).where(SourceFile.watch_id == watch_id,
                                                  SourceFile.ref.in_(ids[i:i + 500]))):
            out[sf.ref] = sf
    return out


def _seen_md5s(s: Session, watch_id: int, md5s: list[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(md5s), 500):
        out.update(s.exec(select(SourceFile.fingerprint).where(SourceFile.watch_id == watch_id,
                                                               SourceFile.fingerprint.in_(md5s[i:i + 500]))))
    return out


def _record(ctx, feed_id: int, stored_token: str | None, cid: int, events: list[FolderEvent], left: dict[str, str],
            problems: list[WatchProblem], result: FeedResult) -> None:
    """Record a poll's events, only while this replica still holds the feed from the token it read: the feed
    row is locked first (PostgreSQL; SQLite's writer is alone anyway), so a replica whose lease lapsed
    mid-poll and was taken over finds another owner or a newer token and records nothing (the other one
    read, or reads, the same changes) instead of racing it on what was already recorded."""
    from aiposter.core.pipeline import _create_post

    by_watch: dict[int, list[FolderEvent]] = {}
    for e in events:
        by_watch.setdefault(e.watch, []).append(e)
    with session_scope(ctx.engine) as s:
        feed = s.exec(select(DriveFeed).where(DriveFeed.id == feed_id).with_for_update()).first()
        if feed is None or feed.lease_owner != ctx.owner or feed.page_token != stored_token:
            result.superseded = True
            return
        for p in problems:
            result.problems[p.watch] = f"folder: {p.error}"
            w = s.get(Watch, p.watch)
            if w is not None:  # listed again (checked) by the next polls until the folder is back
                w.baseline_done, w.last_poll_error = False, f"folder: {p.error}"
        for wid, evs in by_watch.items():
            w = s.get(Watch, wid)
            if w is None or wid in result.problems:
                continue
            seen = _seen(s, wid, list({e.file.id for e in evs}))
            md5s = _seen_md5s(s, wid, list({e.file.md5 for e in evs if e.file.md5}))
            targets: list[WatchTarget] | None = None
            for e in sorted(evs, key=lambda e: (e.change_time or e.seen_at, e.file.name)):
                f = e.file
                sf = seen.get(f.id)
                if not e.selected:  # an image of a type this watch does not take: recorded once, not posted
                    if sf is None:
                        seen[f.id] = _skipped_type(s, w, e)
                        result.skipped += 1
                    continue
                verdict = classify(f, {k: v.fingerprint or None for k, v in seen.items()}, md5s)
                if verdict == UNCHANGED:
                    if sf is not None:
                        sf.name, sf.last_seen_at = f.name, e.seen_at
                    continue
                if verdict == CONTENT_CHANGED:
                    sf.fingerprint, sf.size, sf.last_seen_at = f.md5 or "", f.size, e.seen_at
                    sf.reason = f"its content changed in Google Drive after it was {sf.status}; not posted again"
                    continue
                sf = SourceFile(watch_id=wid, ref=f.id, name=f.name, size=f.size, fingerprint=f.md5 or "",
                                source_time=e.seen_at)
                s.add(sf)
                seen[f.id] = sf
                if f.md5:
                    md5s.add(f.md5)
                if verdict == DUPLICATE:
                    sf.status = states.SF_SKIPPED
                    sf.reason = "the same photo (identical bytes) as another file of this watch; not posted twice"
                    result.skipped += 1
                    continue
                assert verdict == NEW
                sf.status = states.SF_QUEUED
                s.flush()
                if targets is None:
                    targets = list(s.exec(select(WatchTarget).where(WatchTarget.watch_id == wid)))
                _create_post(s, w, sf, _remote(f, e.seen_at), w.folder_name, targets)
                result.queued += 1
        if left:
            result.skipped += _skip_left(ctx, s, cid, left)


def _skipped_type(s: Session, w: Watch, e: FolderEvent) -> SourceFile:
    f = e.file
    sf = SourceFile(watch_id=w.id, ref=f.id, name=f.name, size=f.size, fingerprint=f.md5 or "",
                    source_time=e.seen_at, status=states.SF_SKIPPED,
                    reason=f"{image_types.not_taken(f.mime_type, w.image_types)}; not posted")
    s.add(sf)
    return sf


def _remote(f: DriveFile, arrived: datetime) -> RemoteFile:
    return RemoteFile(ref=f.id, name=f.name, size=f.size, arrived_at=arrived, fingerprint=f.md5 or "",
                      mime_type=f.mime_type, description=f.description)


def _skip_left(ctx, s: Session, cid: int, left: dict[str, str]) -> int:
    """Posts of files that left before they were downloaded are skipped with the reason."""
    from aiposter.core.pipeline import add_event

    ids = list(left)
    n = 0
    q = (select(Post).join(Watch, Watch.id == Post.watch_id)
         .where(Watch.source == SOURCE, Watch.source_connection_id == cid, Post.source_ref.in_(ids),
                Post.status == states.DETECTED, Post.lease_owner.is_(None)))
    for post in s.exec(q):
        reason = LEFT_REASONS.get(left[post.source_ref], "the file left the watched folder before it was processed")
        for t in s.exec(select(PostTarget).where(PostTarget.post_id == post.id)):
            t.status, t.last_error, t.updated_at = states.T_SKIPPED, reason, utcnow()
        post.status, post.last_error = states.SKIPPED, reason
        post.finished_at = post.updated_at = utcnow()
        post.content_hash = None
        add_event(s, post.id, states.SKIPPED, reason)
        sf = s.get(SourceFile, post.source_file_id) if post.source_file_id else None
        if sf is not None:
            sf.status, sf.reason = states.SF_SKIPPED, reason
        n += 1
    return n


def _record_baseline(ctx, watch_id: int, listing: FolderListing | WatchProblem) -> int:
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, watch_id)
        return 0 if w is None else apply_baseline(s, w, listing, deferred=True)


def apply_baseline(s: Session, w: Watch, listing: FolderListing | WatchProblem, *, deferred: bool = False) -> int:
    """A watch's first listing: what is there is the baseline (or queued, with ``backfill``; files created
    after ``baseline_at`` are new). A folder problem puts the watch in error and leaves the baseline to be
    taken again (so the watch heals when the folder is back). Returns how many posts were queued."""
    from aiposter.core.pipeline import _create_post

    now = utcnow()
    if isinstance(listing, WatchProblem):
        w.last_poll_error = f"folder: {listing.error}"
        w.baseline_done = False
        return 0
    w.folder_name = listing.folder.name or w.folder_name
    w.drive_id = listing.folder.drive_id
    seen = set(_seen(s, w.id, [f.id for f in listing.files]))
    md5s: set[str] = set()
    targets: list[WatchTarget] | None = None
    queued = 0
    rows: list[dict] = []  # the baseline, inserted in one executemany (10,000 files: no ORM object each)
    for f in listing.files:
        if f.id in seen:
            continue
        seen.add(f.id)
        # A baseline taken later than the watch's creation (Drive was unreachable then): files Drive dates
        # after the creation arrived meanwhile and are new. Taken at creation, the listing is the baseline.
        late = deferred and w.baseline_at is not None and f.created_time is not None and \
            f.created_time > w.baseline_at
        if (w.backfill or late) and not (f.md5 and f.md5 in md5s):
            sf = SourceFile(watch_id=w.id, ref=f.id, name=f.name, size=f.size, fingerprint=f.md5 or "",
                            source_time=f.created_time or now, status=states.SF_QUEUED)
            s.add(sf)
            s.flush()
            if targets is None:
                targets = list(s.exec(select(WatchTarget).where(WatchTarget.watch_id == w.id)))
            _create_post(s, w, sf, _remote(f, now), w.folder_name, targets)
            queued += 1
        else:
            rows.append({"watch_id": w.id, "ref": f.id, "name": f.name, "size": f.size, "fingerprint": f.md5 or "",
                         "source_time": f.created_time or now, "first_seen_at": now, "last_seen_at": now,
                         "status": states.SF_BASELINE, "reason": "already in the folder when the watch started"})
        if f.md5:
            md5s.add(f.md5)
    for i in range(0, len(rows), 1000):
        s.execute(sa.insert(SourceFile), rows[i:i + 1000])
    w.baseline_done = True
    if w.last_poll_error and _folder_error(w.last_poll_error):
        w.last_poll_error = None
    w.last_poll_at = now
    return queued
