"""The scheduler in process (real APScheduler, real worker threads): edits are picked up while running,
and a watch is never polled by two workers at once, even by two daemons sharing the database."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from helpers import wait_for, write_image
from test_pipeline import add_watch, make_due

from aiposter.core import registry
from aiposter.core.daemon import POLL_BATCH, Daemon
from aiposter.core.models import Post, Watch, utcnow
from aiposter.core.pipeline import Context, poll_watches
from aiposter.db import session_scope
from aiposter.services import watches
from aiposter.sources.local import LocalSource


def published(ctx) -> set[str]:
    with session_scope(ctx.engine) as s:
        return set(s.execute(sa.select(Post.file_name).where(Post.status == "published")).scalars())


def test_pause_resume_and_interval_edits_apply_while_running(ctx, tmp_path):
    inbox = tmp_path / "in"
    wid = add_watch(ctx, inbox, interval_seconds=1)
    # A second watch polled every second is the clock: "nothing happened to the first watch while the
    # witness was polled three times" replaces a bare sleep (three of its intervals, the daemon ticking).
    witness = add_watch(ctx, tmp_path / "witness", interval_seconds=1)
    daemon = Daemon(ctx)
    daemon.start()
    try:
        assert wait_for(lambda: _watch(ctx, wid).baseline_done and _watch(ctx, witness).baseline_done)
        write_image(inbox, "one.jpg")
        assert wait_for(lambda: published(ctx) == {"one.jpg"})

        _edit(ctx, wid, watches.WatchSpec(enabled=False))  # pause
        paused_at = _watch(ctx, wid).last_poll_at
        write_image(inbox, "two.jpg")
        _witness_polls(ctx, witness, 3)
        assert _watch(ctx, wid).last_poll_at == paused_at  # not polled while paused
        assert published(ctx) == {"one.jpg"}
        _edit(ctx, wid, watches.WatchSpec(enabled=True))  # resume
        assert wait_for(lambda: published(ctx) == {"one.jpg", "two.jpg"})

        before = _watch(ctx, wid).last_poll_at
        _edit(ctx, wid, watches.WatchSpec(interval_seconds=3600))  # an edit polls once now, then at the new pace
        assert wait_for(lambda: _watch(ctx, wid).last_poll_at > before)
        polled = _watch(ctx, wid).last_poll_at
        write_image(inbox, "three.jpg")
        _witness_polls(ctx, witness, 3)
        assert _watch(ctx, wid).last_poll_at == polled  # the new, long interval is in force
        assert "three.jpg" not in published(ctx)
        # Polls keep each watch's own phase in the interval, so the next one is at least half the new interval away.
        assert (_watch(ctx, wid).next_poll_at - _watch(ctx, wid).last_poll_at).total_seconds() >= 1800
    finally:
        assert daemon.stop(timeout=5)


def _witness_polls(ctx, witness, n: int) -> None:
    """Wait until the witness watch (interval 1 s) has been polled ``n`` more times."""
    seen = [_watch(ctx, witness).last_poll_at]

    def advanced() -> bool:
        last = _watch(ctx, witness).last_poll_at
        if last != seen[-1]:
            seen.append(last)
        return len(seen) > n

    assert wait_for(advanced, timeout=30)


class SlowSource(LocalSource):
    """The real local source, slowed down, recording how many polls of each watch overlap."""

    def __init__(self, cfg, shared):
        super().__init__(cfg)
        self.shared = shared

    def list(self, watch):
        with self.shared["lock"]:
            self.shared["now"][watch.id] = self.shared["now"].get(watch.id, 0) + 1
            self.shared["max"] = max(self.shared["max"], self.shared["now"][watch.id])
            self.shared["polls"] += 1
        try:
            time.sleep(0.3)
            return super().list(watch)
        finally:
            with self.shared["lock"]:
                self.shared["now"][watch.id] -= 1


def test_a_watch_is_never_polled_twice_at_once_even_by_two_daemons(ctx, tmp_path):
    shared = {"lock": threading.Lock(), "now": {}, "max": 0, "polls": 0}
    for i in range(3):
        add_watch(ctx, tmp_path / f"in{i}", interval_seconds=1)
    daemons = [Daemon(Context(ctx.cfg, ctx.engine, owner=owner)) for owner in ("replica-a", "replica-b")]
    # Every watch due at every tick: the two daemons compete for the same rows all the time.
    with registry.override(registry.SOURCE, "local", lambda deps: SlowSource(deps.cfg, shared)):
        for d in daemons:
            d.start()
        try:
            assert wait_for(lambda: shared["polls"] >= 20, timeout=30)
        finally:
            for d in daemons:
                d.stop(timeout=5)
    assert shared["max"] == 1
    with session_scope(ctx.engine) as s:
        assert s.execute(sa.select(sa.func.count()).select_from(Watch).where(
            Watch.lease_owner.is_not(None))).scalar() == 0  # stopping released every lease


def _watch(ctx, wid) -> Watch:
    with session_scope(ctx.engine) as s:
        return s.get(Watch, wid)


def _edit(ctx, wid, spec) -> None:
    with session_scope(ctx.engine) as s:
        w = s.get(Watch, wid)
        from aiposter.core.models import User

        watches.update_watch(s, ctx.cfg, s.get(User, w.user_id), w, spec, allow_any_folder=True)


def _commits(engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "commit", lambda conn: seen.append(1))
    return seen


def test_a_tick_claims_watches_and_posts_in_one_transaction_in_order(ctx, tmp_path):
    daemon = Daemon(ctx)  # not started: its ticks run here, no scheduler or worker competes
    commits = _commits(ctx.engine)
    daemon.tick()  # nothing due: one transaction (it was three: watches, Drive feeds, posts)
    assert len(commits) == 1 and daemon.tasks.empty()

    inbox = tmp_path / "in"
    wid = add_watch(ctx, inbox, backfill=True)
    write_image(inbox, "one.jpg")
    make_due(ctx, wid)
    daemon.tick()
    kind, ident = daemon.tasks.get_nowait()
    assert (kind, ident) == ("polls", [wid])
    poll_watches(ctx, ident)  # the photo becomes a post with a step due now
    make_due(ctx, wid)
    del commits[:]
    daemon.tick()
    assert len(commits) == 1  # the watch and the post claimed together
    queued = [daemon.tasks.get_nowait() for _ in range(daemon.tasks.qsize())]
    assert [k for k, _ in queued] == ["polls", "post"]  # watches first, then posts, as before
    with session_scope(ctx.engine) as s:
        assert s.get(Post, queued[1][1]).lease_owner == ctx.owner and s.get(Watch, wid).lease_owner == ctx.owner


def test_a_worker_ticks_after_work_but_not_after_an_idle_batch_when_the_scheduler_ticks_soon(ctx, make_ctx):
    stopped = Daemon(ctx)  # no scheduler: nothing else would tick, so every finished task ticks
    assert stopped.tick_after("polls", [1, 2], 0)
    daemon = Daemon(ctx)  # tick_seconds 0.2: the scheduler's next tick is always under a second away
    daemon.start()
    try:
        assert not daemon.tick_after("polls", [1, 2], 0)  # idle partial batch: the scheduler's tick will do
        assert daemon.tick_after("polls", [1, 2], 1)  # a watch had something new
        assert wait_for(lambda: daemon._took_all_due)  # its ticks claimed fewer watches than their limit
        assert not daemon.tick_after("polls", list(range(POLL_BATCH)), 0)  # so a full batch leaves nothing due
        assert daemon.tick_after("polls", [1, 2], None)  # the batch failed
        assert daemon.tick_after("post", 7, None) and daemon.tick_after("poll", 3, None)
        assert daemon.tick_after("feed", 4, None)
    finally:
        assert daemon.stop(timeout=5)
    slow = Daemon(make_ctx(daemon={"tick_seconds": 60}))  # the scheduler's tick a minute away: tick now
    slow.start()
    try:
        assert slow.tick_after("polls", [1, 2], 0)
    finally:
        assert slow.stop(timeout=5)


def test_a_full_batch_ticks_again_only_when_its_claim_hit_the_limit(make_ctx, tmp_path):
    ctx = make_ctx(daemon={"workers": 1})  # one free slot: a tick claims at most POLL_BATCH local watches
    daemon = Daemon(ctx)  # not started: its ticks run here
    for i in range(POLL_BATCH + 1):
        add_watch(ctx, tmp_path / f"w{i}")
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).values(next_poll_at=utcnow() - timedelta(seconds=1)))
    daemon.tick()
    kind, ident = daemon.tasks.get_nowait()
    # One more is due: the worker that polls this batch ticks at once (tick_after), idle or not.
    assert kind == "polls" and len(ident) == POLL_BATCH and daemon._took_all_due is False
    daemon.tick()
    assert len(daemon.tasks.get_nowait()[1]) == 1 and daemon._took_all_due is True


def test_a_failed_task_hands_its_leases_back(ctx, tmp_path, caplog):
    """A task that raised no longer holds its leases (the renew job used to extend them until the daemon
    stopped, so the watch was never polled again). After a lost database connection they are free at once
    and the next tick redoes the work; after any other error they are no longer renewed and expire as a
    crashed worker's would (a bug retried once a lease, not at every tick)."""
    from aiposter.core import queue as workqueue

    lost_wid, bug_wid = add_watch(ctx, tmp_path / "a"), add_watch(ctx, tmp_path / "b")
    for wid in (lost_wid, bug_wid):
        make_due(ctx, wid)
    with session_scope(ctx.engine) as s:
        assert sorted(workqueue.claim_watches(s, ctx.owner, 60, 10)) == sorted([lost_wid, bug_wid])
    expires = _watch(ctx, bug_wid).lease_expires_at
    daemon = Daemon(ctx)  # not started: only its handling of a failed task
    lost = sa.exc.OperationalError("SELECT 1", {}, Exception("terminating connection due to administrator command"),
                                   connection_invalidated=True)
    daemon._task_failed("polls", [lost_wid], lost)
    daemon._task_failed("poll", bug_wid, RuntimeError("a bug"))
    assert (_watch(ctx, lost_wid).lease_owner, _watch(ctx, lost_wid).lease_expires_at) == (None, None)
    assert (_watch(ctx, bug_wid).lease_owner, _watch(ctx, bug_wid).lease_expires_at) == (None, expires)
    daemon.renew()
    assert _watch(ctx, bug_wid).lease_expires_at == expires  # no longer renewed
    with session_scope(ctx.engine) as s:  # another worker: the first at once, the other once its lease expires
        assert workqueue.claim_watches(s, "other", 60, 10) == [lost_wid]
    lines = [r for r in caplog.records if r.getMessage() == "daemon.task_failed"]
    assert [r.levelname for r in lines] == ["WARNING", "ERROR"]
    assert lines[0].fields["error"].startswith("database connection lost: ") and lines[0].exc_info is None
    assert lines[1].exc_info is not None  # a bug keeps its traceback


def test_a_tick_whose_commit_answer_is_lost_gives_its_claims_back(ctx, tmp_path):
    """The server committed the tick's claims but its answer never came (the connection dropped): the
    claims are ours in the database, yet no worker has them, and the renew job would extend them for ever.
    The tick hands them back, so the next tick (here or on another replica) takes the work."""
    from sqlmodel import Session

    wid = add_watch(ctx, tmp_path / "a")
    make_due(ctx, wid)
    daemon = Daemon(ctx)  # not started: the tick alone
    me = threading.get_ident()
    lost = []

    def answer_lost(session):
        if threading.get_ident() == me and not lost:
            lost.append(session)
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"),
                                          connection_invalidated=True)

    sa.event.listen(Session, "after_commit", answer_lost)
    try:
        daemon.tick()
    finally:
        sa.event.remove(Session, "after_commit", answer_lost)
    assert lost and daemon.tasks.empty()  # the claim committed, then the tick failed: no task handed out
    w = _watch(ctx, wid)
    assert (w.lease_owner, w.lease_expires_at) == (None, None)
    daemon.renew()
    daemon.tick()
    assert daemon.tasks.get_nowait() == ("polls", [wid])
