"""Poll bookkeeping at scale: batch claims in one statement, idle watches written back in bulk, and each
watch polling on its own stable phase so thousands of watches do not poll in the same second."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from helpers import write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, posts

from aiposter.core import queue as workqueue
from aiposter.core.models import Watch, utcnow
from aiposter.core.pipeline import next_poll_at, poll_watches
from aiposter.db import session_scope


def test_next_poll_is_half_to_one_and_a_half_intervals_away_then_exactly_one():
    now = datetime(2026, 11, 25, 3, 0, 7, 250_000, tzinfo=UTC)
    for wid in range(1, 500):
        first = next_poll_at(wid, 60, now)
        assert timedelta(seconds=30) <= first - now <= timedelta(seconds=90)
        assert next_poll_at(wid, 60, first) - first == timedelta(seconds=60)
        assert next_poll_at(wid, 60, now) == first  # stable


def test_ten_thousand_watches_created_together_spread_over_the_interval():
    now = datetime(2026, 11, 25, 3, 0, 0, tzinfo=UTC)
    seconds = Counter(int(next_poll_at(wid, 60, now).timestamp()) % 60 for wid in range(1, 10_001))
    assert len(seconds) == 60
    assert max(seconds.values()) < 2 * 10_000 / 60


def test_a_batch_claim_takes_each_due_watch_once(ctx, tmp_path):
    ids = [add_watch(ctx, tmp_path / f"in{i}") for i in range(5)]
    for wid in ids:
        make_due(ctx, wid)
    with session_scope(ctx.engine) as s:
        first = workqueue.claim_watches(s, "a", 60, 3, source="local")
    with session_scope(ctx.engine) as s:
        second = workqueue.claim_watches(s, "b", 60, 10)
    with session_scope(ctx.engine) as s:
        third = workqueue.claim_watches(s, "c", 60, 10)
    assert len(first) == 3 and sorted(first + second) == sorted(ids) and third == []
    with session_scope(ctx.engine) as s:
        assert {w.lease_owner for w in s.exec(select(Watch))} == {"a", "b"}


def test_a_batch_poll_writes_idle_watches_back_and_sends_new_files_down_the_full_path(ctx, tmp_path):
    quiet, busy = add_watch(ctx, tmp_path / "quiet"), add_watch(ctx, tmp_path / "busy", backfill=True)
    for wid in (quiet, busy):
        make_due(ctx, wid)
    with session_scope(ctx.engine) as s:
        claimed = workqueue.claim_watches(s, ctx.owner, 60, 10, source="local")
    assert poll_watches(ctx, claimed) == 2  # first polls: baselines, so both take the full path
    assert len(posts(ctx)) == 0
    write_image(tmp_path / "busy", "new.jpg")
    before = utcnow()
    for wid in (quiet, busy):
        make_due(ctx, wid)
    with session_scope(ctx.engine) as s:
        claimed = workqueue.claim_watches(s, ctx.owner, 60, 10, source="local")
    assert poll_watches(ctx, claimed) == 1  # the daemon's worker ticks after it (core/daemon.py)
    assert [p.file_name for p in posts(ctx)] == ["new.jpg"]
    with session_scope(ctx.engine) as s:
        for wid in (quiet, busy):
            w = s.get(Watch, wid)
            assert w.lease_owner is None and w.last_poll_at >= before
            assert w.next_poll_at == next_poll_at(wid, w.interval_seconds, w.last_poll_at)
    make_due(ctx, quiet)
    with session_scope(ctx.engine) as s:
        claimed = workqueue.claim_watches(s, ctx.owner, 60, 10, source="local")
    assert claimed == [quiet] and poll_watches(ctx, claimed) == 0  # all idle: no tick needed after it
