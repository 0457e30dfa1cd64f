"""Multi-step publishing through the real pipeline, with the scripted container platform
(aiposter.publishers.scripted) plugged in through the registry: pending -> pending -> published without
holding a worker, a step cut off before its handle was committed, an unknown outcome reconciled, a bounded
wait, and every step bounded, also for errors that are not PublishErrors."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, posts
from test_retries import _fast_forward, _run_rounds

from aiposter.core import registry, states
from aiposter.core.models import Post, PostEvent, PostTarget, utcnow
from aiposter.db import session_scope
from aiposter.publishers import scripted
from aiposter.publishers.outbox import OutboxPublisher
from aiposter.services.posts import waiting_for


@pytest.fixture
def platform(tmp_path):
    """The scripted platform, registered as the destination ``scripted`` for the test."""
    directory = tmp_path / "platform"
    with registry.override(registry.DESTINATION, "scripted", scripted.factory(directory)):
        yield scripted.ScriptedPlatform(directory)


def _new_photos(ctx, inbox, *names, targets=("scripted",)) -> None:
    wid = add_watch(ctx, inbox, targets=list(targets))
    drain(ctx)
    for name in names:
        write_image(inbox, name)
    make_due(ctx, wid)


def _targets(ctx) -> dict[str, PostTarget]:
    with session_scope(ctx.engine) as s:
        rows = s.execute(select(Post.file_name, PostTarget).join(Post, Post.id == PostTarget.post_id)).all()
        return {name: t for name, t in rows}


def _events(ctx) -> list[str]:
    with session_scope(ctx.engine) as s:
        return [e.message for e in s.exec(select(PostEvent).order_by(PostEvent.id))]


def test_a_bug_in_publish_is_bounded_by_publish_attempts(ctx, tmp_path):
    """Regression: an exception that is not a PublishError was retried without limit (25 calls with
    publish_attempts = 5, the post stuck in `publishing`)."""

    class Broken(OutboxPublisher):
        calls = 0

        def publish(self, req):
            Broken.calls += 1
            raise RuntimeError("adapter bug")

    with registry.override(registry.DESTINATION, "outbox", lambda deps: Broken(deps.cfg)):
        _new_photos(ctx, tmp_path / "in", "p.jpg", targets=["outbox"])
        _run_rounds(ctx, 25)
    [p] = posts(ctx)
    assert Broken.calls == ctx.cfg.retry.publish_attempts == 5
    assert p.status == states.FAILED
    assert "gave up after 5 attempts: internal error: RuntimeError('adapter bug')" in p.last_error


def test_pending_twice_then_published_without_holding_a_worker(ctx, tmp_path, platform):
    ctx.cfg.retry.publish_attempts = 3  # fewer than the checks: waiting on the platform spends no attempts
    platform.set_script(**{"slow.jpg": {"pending": 6, "wait": 3600}})
    _new_photos(ctx, tmp_path / "in", "slow.jpg", "quick.jpg")
    drain(ctx)

    # The slow container is processing; the quick one went out meanwhile, and no worker waits.
    t = _targets(ctx)
    slow, quick = t["slow.jpg"], t["quick.jpg"]
    assert quick.status == states.T_PUBLISHED
    assert slow.status == states.T_PUBLISHING and slow.step_started_at is None
    cid = slow.handle["container_id"]
    assert slow.container_id == cid  # written from the handle
    assert slow.next_attempt_at - utcnow() > timedelta(minutes=50)
    with session_scope(ctx.engine) as s:
        post = s.get(Post, slow.post_id)
        assert post.lease_owner is None and post.status == states.PUBLISHING
        assert waiting_for(s, post).startswith(f"waiting: scripted: container {cid} processing (IN_PROGRESS)")

    for _ in range(10):
        _fast_forward(ctx)
        drain(ctx)
        if _targets(ctx)["slow.jpg"].status != states.T_PUBLISHING:
            break
    slow = _targets(ctx)["slow.jpg"]
    assert slow.status == states.T_PUBLISHED and slow.platform_post_id == f"m{cid}"
    assert slow.attempts == 1
    mine = [c for c in platform.containers() if c["file_name"] == "slow.jpg"]
    assert len(mine) == 1 and mine[0]["checks"] == 7 and mine[0]["status"] == "PUBLISHED"
    assert [p.status for p in posts(ctx)] == [states.PUBLISHED, states.PUBLISHED]
    assert f"scripted: container {cid} created" in _events(ctx)


def test_a_step_cut_off_before_its_checkpoint_resumes_the_same_container(ctx, tmp_path, platform):
    """The container was created, then the step died before the handle was committed: the next round's
    recover finds the container from when the attempt started, instead of making a second one."""

    class DiesBeforeCheckpoint(scripted.ScriptedPublisher):
        died = False

        def publish(self, req):
            if not DiesBeforeCheckpoint.died:
                def killed(handle):
                    DiesBeforeCheckpoint.died = True
                    raise RuntimeError("killed")
                req.checkpoint = killed
            return super().publish(req)

    with registry.override(registry.DESTINATION, "scripted",
                           lambda deps: DiesBeforeCheckpoint(platform.directory)):
        _new_photos(ctx, tmp_path / "in", "p.jpg")
        _run_rounds(ctx, 4)
    [p] = posts(ctx)
    assert DiesBeforeCheckpoint.died and p.status == states.PUBLISHED
    [c] = platform.containers()
    assert c["status"] == "PUBLISHED"
    assert _targets(ctx)["p.jpg"].container_id == c["id"]
    assert any("found in progress after an interrupted attempt" in m for m in _events(ctx))


def test_an_unknown_outcome_is_reconciled_not_resent(ctx, tmp_path, platform):
    platform.set_script(default={"unknown": 1})
    ctx.cfg.retry.base_delay_seconds = 30  # the check waits until we fast-forward
    _new_photos(ctx, tmp_path / "in", "p.jpg")
    drain(ctx)
    t = _targets(ctx)["p.jpg"]
    assert t.status == states.T_PUBLISHING and "outcome unknown" in t.last_error
    _run_rounds(ctx, 2)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED
    [c] = platform.containers()
    assert _targets(ctx)["p.jpg"].platform_post_id == c["media_id"]
    assert any("confirmed after an interrupted attempt" in m for m in _events(ctx))


def test_a_wait_past_the_bound_fails_with_the_last_platform_status(ctx, tmp_path, platform):
    platform.set_script(default={"pending": 1000, "wait": 0})
    _new_photos(ctx, tmp_path / "in", "p.jpg")
    drain(ctx, max_rounds=3)
    with session_scope(ctx.engine) as s:  # as if the platform had kept it processing for two hours
        s.execute(sa.update(PostTarget).values(pending_since=utcnow() - timedelta(hours=2)))
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED
    assert "still not done after waiting" in p.last_error and "publish_max_wait_seconds" in p.last_error
    assert "processing (IN_PROGRESS)" in p.last_error


def test_a_container_error_fails_the_target_and_a_transient_create_error_retries(ctx, tmp_path, platform):
    platform.set_script(**{"bad.jpg": {"error": "2207052 media could not be fetched"},
                           "flaky.jpg": {"fail_create": 2}})
    _new_photos(ctx, tmp_path / "in", "bad.jpg", "flaky.jpg")
    _run_rounds(ctx, 5)
    by_name = {p.file_name: p for p in posts(ctx)}
    assert by_name["bad.jpg"].status == states.FAILED and "2207052" in by_name["bad.jpg"].last_error
    assert by_name["flaky.jpg"].status == states.PUBLISHED
    assert _targets(ctx)["flaky.jpg"].attempts == 3
    assert [c["file_name"] for c in platform.containers()].count("flaky.jpg") == 1


def test_a_destination_without_its_module_fails_clearly(ctx, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.DESTINATIONS, "instagram", registry.DestinationEntry(
        "instagram", "aiposter.publishers.not_shipped", "instagram"))
    with registry.override(registry.DESTINATION, "outbox", lambda deps: registry.build(
            registry.DESTINATION, "instagram", deps)):
        _new_photos(ctx, tmp_path / "in", "p.jpg", targets=["outbox"])
        drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED
    assert "publisher unavailable: the instagram target platform is not available in this version" in p.last_error
