"""Retries, backoff and the exactly-once rule, with test adapters plugged into the ports
(the pipeline and the real outbox publisher underneath are not mocked)."""

from __future__ import annotations

import random
from contextlib import ExitStack
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, outbox_records, posts

from aiposter.captioners.template import TemplateCaptioner
from aiposter.core import registry, states
from aiposter.core.errors import CaptionError, PublishError, StepError
from aiposter.core.models import Pause, Post, PostTarget, utcnow
from aiposter.core.retry import Backoff, GiveUp, Retry
from aiposter.db import session_scope
from aiposter.publishers.outbox import OutboxPublisher


def test_backoff_is_exponential_jittered_and_capped():
    b = Backoff(base=10, cap=100, max_attempts=6)
    rng = random.Random(1)
    delays = [b.delay(n, rng) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(100, 10 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    now = utcnow()
    assert isinstance(b.decide(1, StepError("x"), now), Retry)
    assert isinstance(b.decide(6, StepError("x"), now), GiveUp)
    assert isinstance(b.decide(1, StepError("x", permanent=True), now), GiveUp)
    r = b.decide(1, StepError("x", retry_after=80), now)
    assert r.delay >= 80  # Retry-After is honoured (up to the cap)


class FlakyOutbox(OutboxPublisher):
    """The real outbox, failing the first ``failures`` calls the way a platform would."""

    def __init__(self, cfg, failures=0, error=None, after_write=False):
        super().__init__(cfg)
        self.failures = failures
        self.error = error or PublishError("503 from platform")
        self.after_write = after_write
        self.calls = 0

    def publish(self, req):
        self.calls += 1
        if self.calls <= self.failures:
            if self.after_write:
                super().publish(req)  # the post went out, then the connection dropped
            raise self.error
        return super().publish(req)


_plugged = ExitStack()


@pytest.fixture(autouse=True)
def _unplug():
    """Test adapters are plugged in through the registry for one test only."""
    with _plugged:
        yield


def _setup(ctx, inbox, publisher=None, *, captioner=None, photos: int = 1) -> int:
    """Plug in the test adapters, take the watch's baseline, then drop ``photos`` new photos (due now)."""
    if publisher is not None:
        _plugged.enter_context(registry.override(registry.DESTINATION, "outbox", lambda deps: publisher))
    if captioner is not None:
        _plugged.enter_context(registry.override(registry.CAPTIONER, "template", lambda deps: captioner))
    wid = add_watch(ctx, inbox)
    drain(ctx)
    for i in range(photos):
        write_image(inbox, "p.jpg" if photos == 1 else f"{i}.jpg")
    make_due(ctx, wid)
    return wid


def _fast_forward(ctx):
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Post).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        s.execute(sa.update(PostTarget).values(next_attempt_at=utcnow() - timedelta(seconds=1)))


def _expire_pauses(ctx):
    """Time passing for pauses: each ends now (the next post probes the provider)."""
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Pause).values(until=utcnow() - timedelta(seconds=1)))


def _run_rounds(ctx, rounds: int) -> None:
    """Drain, then make every waiting retry due, as time passing would."""
    for _ in range(rounds):
        drain(ctx)
        _fast_forward(ctx)


def test_transient_publish_error_retries_then_succeeds(ctx, tmp_path):
    pub = FlakyOutbox(ctx.cfg, failures=2)
    _setup(ctx, tmp_path / "in", pub)
    _run_rounds(ctx, 5)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED and pub.calls == 3
    with session_scope(ctx.engine) as s:
        t = s.exec(select(PostTarget)).one()
        assert t.attempts == 3


def test_publish_gives_up_after_the_limit_keeping_the_error(ctx, tmp_path):
    pub = FlakyOutbox(ctx.cfg, failures=99)
    _setup(ctx, tmp_path / "in", pub)
    _run_rounds(ctx, 10)
    [p] = posts(ctx)
    assert p.status == states.FAILED
    assert pub.calls == ctx.cfg.retry.publish_attempts
    assert "gave up after 5 attempts: 503 from platform" in p.last_error


def test_permanent_publish_error_fails_at_once(ctx, tmp_path):
    pub = FlakyOutbox(ctx.cfg, failures=99, error=PublishError("(#190) token expired", permanent=True))
    _setup(ctx, tmp_path / "in", pub)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED and pub.calls == 1 and "token expired" in p.last_error


def test_ambiguous_timeout_is_reconciled_not_resent(ctx, tmp_path):
    """The platform got the post but we timed out: the next round finds it instead of posting twice."""
    pub = FlakyOutbox(ctx.cfg, failures=1, after_write=True,
                      error=PublishError("read timeout", ambiguous=True))
    _setup(ctx, tmp_path / "in", pub)
    _run_rounds(ctx, 3)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED
    assert pub.calls == 1  # recovered, never re-sent
    assert outbox_records(ctx) == ["p.jpg"]
    with session_scope(ctx.engine) as s:
        from aiposter.core.models import PostEvent

        msgs = [e.message for e in s.exec(select(PostEvent))]
    assert any("confirmed after an interrupted attempt" in m for m in msgs)


class NoRecover(FlakyOutbox):
    def recover(self, req):
        raise PublishError("platform has no way to look the post up", ambiguous=True)


def test_unknowable_outcome_fails_for_a_person_to_check(ctx, tmp_path):
    pub = NoRecover(ctx.cfg, failures=1, after_write=True, error=PublishError("timeout", ambiguous=True))
    _setup(ctx, tmp_path / "in", pub)
    _run_rounds(ctx, 3)
    [p] = posts(ctx)
    assert p.status == states.FAILED and pub.calls == 1
    assert "not re-sent to avoid a duplicate" in p.last_error


class DownCaptioner(TemplateCaptioner):
    def __init__(self, cfg, failures):
        super().__init__(cfg)
        self.failures = failures
        self.calls = 0

    def caption(self, request):
        self.calls += 1
        if self.calls <= self.failures:
            raise CaptionError("503 Service Unavailable", code="server_error")
        return super().caption(request)


def test_captioner_outage_pauses_captioning_without_failing_posts(ctx, tmp_path):
    cap = DownCaptioner(ctx.cfg, failures=20)  # longer than caption_attempts
    ctx.cfg.retry.base_delay_seconds, ctx.cfg.retry.max_delay_seconds = 30, 60  # no expiry mid-test
    _setup(ctx, tmp_path / "in", captioner=cap, photos=3)
    drain(ctx)
    ps = posts(ctx)
    assert [p.status for p in ps] == [states.DOWNLOADED] * 3
    assert all("captioner template is paused" in p.last_error for p in ps)
    assert cap.calls == 1  # the breaker held the other two back instead of hammering the provider
    for _ in range(30):
        _expire_pauses(ctx)
        _fast_forward(ctx)
        drain(ctx)
        if all(p.status == states.PUBLISHED for p in posts(ctx)):
            break
    assert [p.status for p in posts(ctx)] == [states.PUBLISHED] * 3
    assert sorted(outbox_records(ctx)) == ["0.jpg", "1.jpg", "2.jpg"]


def test_refusal_fails_the_post_with_the_providers_reason(ctx, tmp_path):
    class Refuses(TemplateCaptioner):
        def caption(self, request):
            raise CaptionError("refused: the image violates the content policy", permanent=True, code="refused")

    _setup(ctx, tmp_path / "in", captioner=Refuses(ctx.cfg))
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED and "content policy" in p.last_error


def test_retry_of_a_failed_target_reuses_the_captions(ctx, tmp_path):
    from aiposter.services import posts as posts_svc

    pub = FlakyOutbox(ctx.cfg, failures=1, error=PublishError("(#200) permission", permanent=True))
    _setup(ctx, tmp_path / "in", pub)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.FAILED
    captions = p.captions
    with session_scope(ctx.engine) as s:
        post = posts_svc.get_post(s, p.id)
        t = s.exec(select(PostTarget)).one()
        posts_svc.retry_target(s, post, t.id)
    drain(ctx)
    [p] = posts(ctx)
    assert p.status == states.PUBLISHED and p.captions == captions and pub.calls == 2


def test_bad_api_key_pauses_captioning_instead_of_failing_every_post(ctx, tmp_path):
    class BadKey(TemplateCaptioner):
        calls = 0

        def caption(self, request):
            BadKey.calls += 1
            raise CaptionError("openai: 401 invalid API key; set api_key", permanent=True, code="auth")

    ctx.cfg.retry.base_delay_seconds, ctx.cfg.retry.max_delay_seconds = 30, 60  # no expiry mid-test
    _setup(ctx, tmp_path / "in", captioner=BadKey(ctx.cfg), photos=2)
    drain(ctx)
    ps = posts(ctx)
    assert [p.status for p in ps] == [states.DOWNLOADED] * 2  # waiting, not failed
    assert all("invalid API key" in p.last_error for p in ps)
    assert BadKey.calls == 1
    with session_scope(ctx.engine) as s:
        pause = s.exec(select(Pause)).one()
    assert pause.scope == "captioner:template" and pause.code == "auth"
    assert pause.until - utcnow() > timedelta(seconds=ctx.cfg.retry.max_delay_seconds - 5)
