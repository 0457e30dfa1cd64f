"""Pauses shared by every replica, through the real pipeline and the real SDKs against the provider fakes,
on SQLite and PostgreSQL: a fault seen by one replica holds every replica's posts (reason shown, no
attempt spent), and the pause lifts when its cause is fixed (config changed, a probe succeeds, an admin
clears it, a user retries)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from captioners.fakes import (
    API_KEY,
    EXPIRED_KEY,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    anthropic_credit_too_low,
    openai_completion,
    openai_error,
)
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due, posts

from aiposter.core import pipeline, states
from aiposter.core import queue as workqueue
from aiposter.core.daemon import Daemon
from aiposter.core.models import Pause, Post, utcnow
from aiposter.db import session_scope
from aiposter.services import posts as posts_svc

ANSWER = json.dumps({"captions": {"outbox": "Golden hour over the harbour."}, "hashtags": ["#sunset"],
                     "alt_text": "Boats at sunset."})


def llm_ctx(make_ctx, provider: str, base_url: str, *, base: float = 30, cap: float = 600, **section):
    values = {"model": "m-test", "api_key": API_KEY, "base_url": base_url, "timeout": 5.0, "max_retries": 0}
    values.update(section)
    return make_ctx(captioner={"default": provider, provider: values},
                    retry={"base_delay_seconds": base, "max_delay_seconds": cap})


def new_photos(ctx, inbox, n: int) -> int:
    wid = add_watch(ctx, inbox)
    drain(ctx)  # the watch's baseline
    for i in range(n):
        write_image(inbox, f"{i}.jpg", size=(320, 240))
    make_due(ctx, wid)
    return wid


def run_one(ctx) -> int | None:
    """Claim one due post (oldest first) as this replica and run its steps."""
    with session_scope(ctx.engine) as s:
        ids = workqueue.claim_posts(s, ctx.owner, 30, 1)
    for pid in ids:
        pipeline.process_post(ctx, pid)
    return ids[0] if ids else None


def waiting(ctx) -> dict[int, str | None]:
    with session_scope(ctx.engine) as s:
        return {p.id: posts_svc.waiting_for(s, p) for p in s.exec(select(Post).order_by(Post.id))}


def the_pause(ctx) -> Pause:
    with session_scope(ctx.engine) as s:
        return s.exec(select(Pause)).one()


def test_a_429_seen_by_one_replica_holds_the_posts_of_another(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded",
                                headers={"retry-after": "30"}))
        a = llm_ctx(make_ctx, "openai", fake.base_url)
        b = llm_ctx(make_ctx, "openai", fake.base_url)
        new_photos(a, tmp_path / "in", 2)
        with session_scope(a.engine) as s:
            [wid] = workqueue.claim_watches(s, a.owner, 30, 10)
        pipeline.poll_watch(a, wid)

        first = run_one(a)   # replica A: downloads, captions, meets the 429
        second = run_one(b)  # replica B: downloads, then is held by A's pause without calling the provider
        assert first != second and second is not None
        assert len(fake.requests) == 1
        pause = the_pause(a)
        assert pause.scope == "captioner:openai" and pause.code == "rate_limited"
        assert pause.until - utcnow() > timedelta(seconds=28)  # Retry-After: 30 honoured
        why = waiting(b)
        for pid in (first, second):
            assert why[pid].startswith("waiting: captioner openai is paused until")
            assert "HTTP 429: Rate limit reached for requests" in why[pid]
        for p in posts(b):
            assert p.status == states.DOWNLOADED and p.step_attempts == 0 and p.paused_by == "captioner:openai"
        assert run_one(b) is None and run_one(a) is None  # nothing is due on either replica


def test_fixing_the_key_and_restarting_lifts_an_auth_pause_at_once(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_completion(ANSWER))
        broken = llm_ctx(make_ctx, "openai", fake.base_url, api_key="sk-wrong")
        new_photos(broken, tmp_path / "in", 2)
        drain(broken)
        assert len(fake.requests) == 1
        assert [p.status for p in posts(broken)] == [states.DOWNLOADED] * 2
        assert all("check [captioner.openai] api_key" in w for w in waiting(broken).values())
        assert the_pause(broken).until - utcnow() > timedelta(seconds=590)  # would wait max_delay_seconds

        fixed = llm_ctx(make_ctx, "openai", fake.base_url)  # the operator fixed the key and restarted
        Daemon(fixed).housekeeping()  # what every start (and every housekeeping round) runs
        assert all(w == "queued: its next step is due now" for w in waiting(fixed).values())
        drain(fixed)
        assert [p.status for p in posts(fixed)] == [states.PUBLISHED] * 2
        assert len(fake.requests) == 3
        with session_scope(fixed.engine) as s:
            assert s.exec(select(Pause)).all() == []


def test_a_replica_still_on_the_old_config_keeps_the_pause(make_ctx, tmp_path):
    """The fingerprint is of the config the fault was seen with: the same config does not lift it."""
    with FakeOpenAI() as fake:
        fake.reply(openai_completion(ANSWER))
        broken = llm_ctx(make_ctx, "openai", fake.base_url, api_key="sk-wrong")
        new_photos(broken, tmp_path / "in", 1)
        drain(broken)
        same = llm_ctx(make_ctx, "openai", fake.base_url, api_key="sk-wrong")
        Daemon(same).housekeeping()
        assert the_pause(same).code == "auth"
        assert run_one(same) is None


@pytest.mark.parametrize("case", ["gemini_expired_key", "anthropic_credit", "openai_wrong_url",
                                  "openai_no_model"])
def test_install_wide_faults_pause_instead_of_failing_every_post(make_ctx, tmp_path, case):
    provider, fake_cls = {"gemini_expired_key": ("gemini", FakeGemini),
                          "anthropic_credit": ("anthropic", FakeAnthropic),
                          "openai_wrong_url": ("openai", FakeOpenAI),
                          "openai_no_model": ("openai", FakeOpenAI)}[case]
    with fake_cls() as fake:
        section, expected = {}, ""
        if case == "gemini_expired_key":
            section, expected = {"api_key": EXPIRED_KEY}, "API key expired"
        elif case == "anthropic_credit":
            fake.reply(anthropic_credit_too_low())
            expected = "credit balance is too low"
        elif case == "openai_wrong_url":
            section, expected = {"base_url": fake.origin + "/api"}, f"base_url ({fake.origin}/api/)"
        else:
            fake.models = {"gpt-4o-mini"}
            section, expected = {"model": "gpt-4o-mni"}, "model ('gpt-4o-mni')"
        if case != "anthropic_credit":
            fake.reply(openai_completion(ANSWER))  # never reached: the fake refuses the request first
        ctx = llm_ctx(make_ctx, provider, section.pop("base_url", fake.base_url), **section)
        new_photos(ctx, tmp_path / "in", 3)
        drain(ctx)
        assert len(fake.requests) == 1  # not one failure per post
    assert [p.status for p in posts(ctx)] == [states.DOWNLOADED] * 3  # waiting, nothing failed
    assert all(expected in w and w.startswith(f"waiting: captioner {provider} is paused")
               for w in waiting(ctx).values())
    assert the_pause(ctx).code in ("auth", "quota", "config")


def test_a_successful_probe_lifts_the_pause_and_releases_every_post(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_error(503, "The server is overloaded", "server_error"))
        ctx = llm_ctx(make_ctx, "openai", fake.base_url)
        new_photos(ctx, tmp_path / "in", 3)
        drain(ctx)
        assert len(fake.requests) == 1
        fake.reply(openai_completion(ANSWER))
        held = posts(ctx)
        with session_scope(ctx.engine) as s:  # time passes: the pause ends, one held post is due
            s.execute(sa.update(Pause).values(until=utcnow()))
            s.execute(sa.update(Post).where(Post.id == held[0].id).values(next_attempt_at=utcnow()))
        drain(ctx)
        assert [p.status for p in posts(ctx)] == [states.PUBLISHED] * 3  # the others released at once
        assert len(fake.requests) == 4


def test_failed_probes_pause_for_longer_each_time_up_to_the_cap(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_error(503, "The server is overloaded", "server_error"))
        ctx = llm_ctx(make_ctx, "openai", fake.base_url, base=30, cap=100)
        new_photos(ctx, tmp_path / "in", 3)
        drain(ctx)
        seen = []
        for round_ in range(1, 6):
            p = the_pause(ctx)
            delay = (p.until - p.updated_at).total_seconds()
            ceiling = min(100, 30 * 2 ** (round_ - 1))
            seen.append(p.failures)
            assert ceiling / 2 - 1 <= delay <= ceiling + 1
            with session_scope(ctx.engine) as s:  # the pause ends; every held post is due
                s.execute(sa.update(Pause).values(until=utcnow()))
                s.execute(sa.update(Post).values(next_attempt_at=utcnow()))
            drain(ctx)
            assert len(fake.requests) == round_ + 1  # one probe per round, the others held
        assert seen == [1, 2, 3, 4, 5]
        assert [p.status for p in posts(ctx)] == [states.DOWNLOADED] * 3
        assert all(p.step_attempts == 0 for p in posts(ctx))


def test_retrying_a_waiting_post_tests_the_pause_now(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_error(503, "The server is overloaded", "server_error"))
        ctx = llm_ctx(make_ctx, "openai", fake.base_url, base=300)
        new_photos(ctx, tmp_path / "in", 2)
        drain(ctx)
        fake.reply(openai_completion(ANSWER))
        first = posts(ctx)[0]
        with session_scope(ctx.engine) as s:
            posts_svc.retry_post(s, posts_svc.get_post(s, first.id))
        drain(ctx)
        assert [p.status for p in posts(ctx)] == [states.PUBLISHED] * 2
        assert len(fake.requests) == 3


def test_retry_does_not_cut_a_providers_retry_after_short(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        fake.reply(openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded",
                                headers={"retry-after": "120"}))
        ctx = llm_ctx(make_ctx, "openai", fake.base_url)
        new_photos(ctx, tmp_path / "in", 1)
        drain(ctx)
        [p] = posts(ctx)
        with session_scope(ctx.engine) as s:
            posts_svc.retry_post(s, posts_svc.get_post(s, p.id))
        drain(ctx)
        assert len(fake.requests) == 1
        assert "paused until" in waiting(ctx)[p.id]


def test_cli_pauses_list_and_clear(make_ctx, tmp_path):
    from typer.testing import CliRunner

    from aiposter.cli import app

    with FakeOpenAI() as fake:
        fake.reply(openai_error(503, "The server is overloaded", "server_error"))
        ctx = llm_ctx(make_ctx, "openai", fake.base_url)
        new_photos(ctx, tmp_path / "in", 2)
        drain(ctx)
        toml = tmp_path / "cli.toml"
        toml.write_text(f"[db]\nurl = {json.dumps(ctx.cfg.db_url)}\n[daemon]\ndata_dir = "
                        f"{json.dumps(str(ctx.cfg.data_dir))}\n[quickstart]\nenabled = false\n")
        runner = CliRunner()
        listed = runner.invoke(app, ["--config", str(toml), "pauses", "list", "--json"])
        assert listed.exit_code == 0, listed.output
        [row] = json.loads(listed.output)
        assert (row["scope"], row["code"], row["held"]) == ("captioner:openai", "server_error", 2)
        assert "503" in row["reason"]
        cleared = runner.invoke(app, ["--config", str(toml), "pauses", "clear", "captioner:openai"])
        assert cleared.exit_code == 0 and "2 post(s) or target(s) released" in cleared.output
        missing = runner.invoke(app, ["--config", str(toml), "pauses", "clear", "captioner:openai"])
        assert missing.exit_code == 1 and "nothing is paused" in missing.output
        fake.reply(openai_completion(ANSWER))
        drain(ctx)
        assert [p.status for p in posts(ctx)] == [states.PUBLISHED] * 2
