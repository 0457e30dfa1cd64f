"""The scheduler: APScheduler 3.x drives three timers over a small pool of worker threads.

* ``tick`` (every ``daemon.tick_seconds``, and whenever a worker runs out of tasks): claim due watches
  and due post steps from the database, up to the free worker slots, and hand them to the workers.
  Watches are due at their own ``next_poll_at``, so each polls at its own interval; watches added,
  edited or "poll now"-ed while running are picked up on the next tick; a leased watch is never
  polled twice at once.
* ``renew`` (every third of ``daemon.lease_seconds``): extend the leases this process holds.
* ``housekeeping``: delete media of finished posts and outbox temp files left by a crash; flag account
  tokens that expire within a week or have expired (status and reason on the connection, a warning in
  the log); refresh access tokens that expire soon (a refused refresh token marks the connection
  ``needs_reauth``); lift captioner pauses whose provider config changed since (see core/pauses.py);
  delete expired pending choices of Facebook Pages (services/grants.py).

Several replicas on one PostgreSQL share the work through the same claims; nothing else is needed.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from aiposter.core import credentials, pauses, pipeline, states
from aiposter.core import drive_feeds as drive_poller
from aiposter.core import queue as workqueue
from aiposter.core.models import DriveFeed, Post, Watch
from aiposter.core.pipeline import Context
from aiposter.db import connection_lost, describe_error, session_scope
from aiposter.logs import fields
from aiposter.services import notify

log = logging.getLogger("aiposter.daemon")

# Local watches polled by one task. 10,000 watches at 60 s are ~170 polls a second: in batches the claim
# and the bookkeeping of idle watches are one statement per batch instead of three transactions per watch.
POLL_BATCH = 100
# A worker that finishes a task ticks at once to claim the next due work, unless the task was a batch of
# idle polls that emptied the due list (a partial batch, nothing found) and the scheduler's own tick is
# at most this far away: on an idle daemon those extra ticks were half of its CPU and found nothing. The
# same for a full batch when the last tick's claim took every local watch then due (it was under its limit).
RETICK_SKIP_SECONDS = 1.0


def instance_id(name: str = "") -> str:
    return name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Daemon:
    def __init__(self, ctx: Context, heartbeat=None):
        self.ctx = ctx
        self.heartbeat = heartbeat  # aiposter.health.Heartbeat: refreshed by every tick
        self.cfg = ctx.cfg
        self.tasks: queue.Queue = queue.Queue()
        self.busy = 0
        self._busy_lock = threading.Lock()
        self._unreturned: list[tuple[type, list[int], bool]] = []  # leases a failed task could not hand back
        self._took_all_due = False  # the last tick claimed every local watch then due (fewer than its limit)
        self.stopping = threading.Event()
        self.workers: list[threading.Thread] = []
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(3), "notify": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        d = self.cfg.daemon
        for i in range(d.workers):
            t = threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            t.start()
            self.workers.append(t)
        self.scheduler.add_job(self.tick, "interval", seconds=d.tick_seconds, id="tick")
        self.scheduler.add_job(self.renew, "interval", seconds=max(1, d.lease_seconds // 3), id="renew")
        self.scheduler.add_job(self.housekeeping, "interval", seconds=d.housekeeping_seconds, id="housekeeping")
        if self.cfg.notify.enabled:
            # Its own job (APScheduler thread): a slow or dead receiver delays only notifications.
            self.scheduler.add_job(self.notify, "interval", seconds=self.cfg.notify.check_seconds, id="notify",
                                   executor="notify")
        self.scheduler.start()
        self.housekeeping()
        self.tick()
        log.info("daemon.started", extra=fields(instance=self.ctx.owner, workers=d.workers))

    @property
    def running(self) -> bool:
        return self.scheduler.running and not self.stopping.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, give in-flight steps ``timeout`` seconds, then release our leases.

        Returns True if every worker finished. Work cut off is safe: it resumes from its last committed
        state on the next start (a target cut off mid-publish is reconciled before any re-send)."""
        timeout = self.cfg.daemon.shutdown_timeout_seconds if timeout is None else timeout
        self.stopping.set()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # noqa: BLE001 - not running
            pass
        for _ in self.workers:
            self.tasks.put(None)
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        for t in self.workers:
            while t.is_alive() and not deadline.is_set():
                t.join(0.05)
        timer.cancel()
        clean = not any(t.is_alive() for t in self.workers)
        try:
            with session_scope(self.ctx.engine) as s:
                workqueue.release_all(s, self.ctx.owner)
                drive_poller.release_all(s, self.ctx.owner)
        except Exception:  # noqa: BLE001 - leases expire on their own
            log.warning("daemon.release_failed", exc_info=True)
        log.info("daemon.stopped", extra=fields(clean=clean))
        return clean

    # ------------------------------------------------------------------ jobs

    def _free_slots(self) -> int:
        with self._busy_lock:
            return self.cfg.daemon.workers - self.busy - self.tasks.qsize()

    def tick(self) -> None:
        if self.stopping.is_set():
            return
        if self.heartbeat is not None:
            try:
                self.heartbeat.beat()
            except OSError:
                log.warning("daemon.heartbeat_failed", exc_info=True)
        claimed_ok, claimed = False, []  # what this tick may hold, should its commit fail
        try:
            free = self._free_slots()
            if free <= 0:
                return
            d = self.cfg.daemon
            feed_ids: list[int] = []
            post_ids: list[int] = []
            # One transaction for the whole tick (it was three: watches, Drive feeds, posts; on an idle
            # daemon most of its cost). Claims are handed to the workers only once committed.
            with session_scope(self.ctx.engine) as s:
                # Local folders are listed in batches (one task, two transactions for a batch of idle
                # watches; see pipeline.poll_watches); other sources one watch per task.
                local = workqueue.claim_watches(s, self.ctx.owner, d.lease_seconds, free * POLL_BATCH,
                                                source="local")
                took_all_due = len(local) < free * POLL_BATCH
                watch_ids = workqueue.claim_watches(s, self.ctx.owner, d.lease_seconds, free,
                                                    exclude_source="local")
                claimed.append((Watch, local + watch_ids))
                batches = [local[i:i + POLL_BATCH] for i in range(0, len(local), POLL_BATCH)]
                free -= len(watch_ids) + len(batches)
                if free > 0:
                    feed_ids = drive_poller.claim_feeds(s, self.ctx.owner, d.lease_seconds, free)
                    claimed.append((DriveFeed, feed_ids))
                    free -= len(feed_ids)
                if free > 0:
                    post_ids = workqueue.claim_posts(s, self.ctx.owner, d.lease_seconds, free)
                    claimed.append((Post, post_ids))
            claimed_ok = True  # committed
            self._took_all_due = took_all_due
            for batch in batches:
                self.tasks.put(("polls", batch))
            for wid in watch_ids:
                self.tasks.put(("poll", wid))
            for fid in feed_ids:
                self.tasks.put(("feed", fid))
            for pid in post_ids:
                self.tasks.put(("post", pid))
        except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the timer
            _log_failure("daemon.tick_failed", exc, retry="next tick")
            if not claimed_ok:
                # The commit failed, or its answer was lost after the server committed: the claims may be
                # ours, but no worker has them, and the renew job would extend them for ever. Give them back.
                for model, ids in claimed:
                    if ids:
                        self._give_back(model, ids, at_once=True, what="tick")

    def renew(self) -> None:
        try:
            with self._busy_lock:
                unreturned, self._unreturned = self._unreturned, []
            try:
                with session_scope(self.ctx.engine) as s:
                    for model, ids, at_once in unreturned:  # first, so they are not renewed below
                        workqueue.hand_back(s, model, ids, self.ctx.owner, at_once)
                    workqueue.renew(s, self.ctx.owner, self.cfg.daemon.lease_seconds)
                    drive_poller.renew(s, self.ctx.owner, self.cfg.daemon.lease_seconds)
            except BaseException:
                with self._busy_lock:
                    self._unreturned[:0] = unreturned
                raise
        except Exception as exc:  # noqa: BLE001
            _log_failure("daemon.renew_failed", exc)

    def notify(self) -> None:
        try:
            notify.deliver_due(self.ctx.engine, self.ctx.keyring, self.cfg, self.ctx.owner)
        except Exception:  # noqa: BLE001 - notifications never take the daemon down
            log.exception("daemon.notify_failed")

    def housekeeping(self) -> None:
        try:
            sweep_media(self.ctx)
            sweep_outbox_temps(self.ctx)
            flag_tokens(self.ctx)
            for scope in pauses.lift_stale(self.ctx.engine, self.cfg):
                log.info("pause.config_changed", extra=fields(scope=scope))
            credentials.refresh_due(credentials.CredentialStore(self.ctx.engine, self.ctx.keyring, self.cfg))
            if self.cfg.oauth.google.push and self.cfg.api.public_url.startswith("https://"):
                from aiposter.sources.google_drive import channels
                channels.maintain(self.ctx)  # open and renew Drive push channels
            purge_security_records(self.ctx)
        except Exception:  # noqa: BLE001
            log.exception("daemon.housekeeping_failed")

    def _worker(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None or self.stopping.is_set():
                return
            kind, ident = task
            with self._busy_lock:
                self.busy += 1
            full_path: int | None = None  # of a batch of polls: watches that had something to do
            try:
                if kind == "poll":
                    pipeline.poll_watch(self.ctx, ident)
                elif kind == "polls":
                    full_path = pipeline.poll_watches(self.ctx, ident)
                elif kind == "feed":
                    from aiposter.sources.google_drive.poller import poll_feed
                    poll_feed(self.ctx, ident)
                else:
                    pipeline.process_post(self.ctx, ident)
            except Exception as exc:  # noqa: BLE001 - never let one task kill a worker
                self._task_failed(kind, ident, exc)
            finally:
                with self._busy_lock:
                    self.busy -= 1
            if self.tasks.empty() and self.tick_after(kind, ident, full_path):
                self.tick()  # claim the next due work now instead of idling until the next tick

    def _task_failed(self, kind: str, ident, exc: Exception) -> None:
        """Log a failed task and hand its leases back, so they are no longer renewed (before, a failed task's
        watches or post stayed leased, renewed every ``lease_seconds / 3``, until the daemon stopped).

        A lost database connection (a PostgreSQL restart, a terminated backend) is one line, and the work
        is claimable again at once: the next tick redoes it from its last committed state, as after a
        restart. Any other failure logs its traceback and leaves the lease to expire, as a crashed worker's
        would: retried after ``lease_seconds``, not in a loop at every tick."""
        lost = connection_lost(exc)
        _log_failure("daemon.task_failed", exc, kind=kind, id=ident,
                     retry="next tick" if lost else "when the lease expires")
        model = {"poll": Watch, "polls": Watch, "feed": DriveFeed}.get(kind, Post)
        self._give_back(model, list(ident) if kind == "polls" else [ident], at_once=lost, what=kind)

    def _give_back(self, model, ids: list[int], *, at_once: bool, what: str) -> None:
        """Hand leases back now (see :func:`workqueue.hand_back`); if that fails too, the renew job does it
        before renewing anything."""
        try:
            with session_scope(self.ctx.engine) as s:
                workqueue.hand_back(s, model, ids, self.ctx.owner, at_once=at_once)
        except Exception as again:  # noqa: BLE001 - the renew job hands them back (or they expire)
            _log_failure("daemon.hand_back_failed", again, kind=what, id=ids)
            with self._busy_lock:
                self._unreturned.append((model, ids, at_once))

    def tick_after(self, kind: str, ident, full_path: int | None) -> bool:
        """Whether a worker that just finished this task should tick at once. Not after a batch of polls
        where every watch was idle (the batch created nothing) and every watch then due was claimed (a
        partial batch; or a full one when the last tick's claim was under its limit: 170 watches due a
        second split into 100 + 70, the full batch's re-tick found only the few that came due since) when
        the scheduler ticks within ``RETICK_SKIP_SECONDS`` anyway. Any other task (a post step, a feed, a
        watch polled alone, a full batch from a claim that hit its limit, a batch with anything new) ticks."""
        if kind != "polls" or full_path != 0:
            return True
        if len(ident) >= POLL_BATCH and not self._took_all_due:
            return True
        return self._scheduled_tick_in() > RETICK_SKIP_SECONDS

    def _scheduled_tick_in(self) -> float:
        """Seconds until the scheduler's next tick (infinite when none is scheduled)."""
        job = self.scheduler.get_job("tick") if self.scheduler.running else None
        when = getattr(job, "next_run_time", None)
        if when is None:
            return math.inf
        return (when - datetime.now(UTC)).total_seconds()


def _log_failure(event: str, exc: Exception, **kw) -> None:
    """A lost database connection, or a database that cannot be reached (a restart in progress: a line each
    tick until it is back), as one warning line naming the error; anything else with its traceback."""
    if connection_lost(exc):
        what = "database unreachable" if exc.statement is None else "database connection lost"
        log.warning(event, extra=fields(error=f"{what}: {describe_error(exc)}", **kw))
    else:
        log.exception(event, extra=fields(**kw))


def flag_tokens(ctx: Context) -> None:
    """Warn, on the connection and in the log, about account tokens that expire soon or have expired."""
    from aiposter.services.connections import flag_expiring_tokens

    with session_scope(ctx.engine) as s:
        for c in flag_expiring_tokens(s):
            log.warning(f"connection.{c.status}", extra=fields(connection_id=c.id, user_id=c.user_id,
                                                               provider=c.provider, reason=c.last_error))


def purge_security_records(ctx: Context) -> None:
    """Audit rows past ``security.audit_retention_days``, rate-limit counters whose window is over, and
    expired pending choices of Facebook Pages (with the Page tokens in them)."""
    from aiposter.services import audit, grants
    from aiposter.services.limits import Counter

    sec = ctx.cfg.security
    with session_scope(ctx.engine) as s:
        n = audit.purge(s, sec.audit_retention_days)
        Counter(sec.login_window_seconds).purge(s)
        if swept := grants.sweep(s):
            log.info("grants.expired", extra=fields(count=swept))
    if n:
        log.info("audit.purged", extra=fields(rows=n, retention_days=sec.audit_retention_days))


def sweep_outbox_temps(ctx: Context, min_age_seconds: float | None = None) -> int:
    """Delete the outbox's temp files (``.post-*.tmp``) left by a write cut off by a crash or a kill.

    A write takes milliseconds, so a temp file older than a lease (at least a minute) belongs to no live
    writer on any replica: the publish it was part of is retried and writes its own."""
    outbox = Path(ctx.cfg.publishers.outbox.directory)
    if not outbox.is_dir():
        return 0
    min_age = max(60.0, ctx.cfg.daemon.lease_seconds) if min_age_seconds is None else min_age_seconds
    cutoff = time.time() - min_age
    removed = 0
    for p in outbox.glob(".post-*.tmp"):
        try:
            if p.lstat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("outbox.temps_swept", extra=fields(count=removed))
    return removed


def sweep_media(ctx: Context) -> int:
    """Delete media whose post is finished or gone (left behind by a crash after the commit). The store is
    shared by replicas: only what the database says is no longer in flight goes."""

    def active(ids: list[int]) -> set[int]:
        keep: set[int] = set()
        with session_scope(ctx.engine) as s:
            for i in range(0, len(ids), 500):
                keep.update(s.execute(sa.select(Post.id).where(Post.id.in_(ids[i:i + 500]),
                                                               Post.status.in_(states.POST_ACTIVE))).scalars())
        return keep

    return ctx.media.sweep(active)
