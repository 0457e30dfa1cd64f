"""An LLM captioner inside the real pipeline: the openai SDK against the loopback fake, on both databases.
A provider outage holds posts back (nothing fails, nothing else stops); when it recovers the posts go
out with the model's captions and the token usage recorded on the post."""

from __future__ import annotations

import json

import sqlalchemy as sa
from helpers import drain, write_image
from sqlmodel import select
from test_pipeline import add_watch, make_due

from aiposter import metrics
from aiposter.core import states
from aiposter.core.models import Pause, Post, utcnow
from aiposter.db import session_scope

from .fakes import FakeOpenAI, openai_completion, openai_error


def answer(platform: str = "outbox") -> str:
    return json.dumps({"captions": {platform: "Golden hour over the harbour."},
                       "hashtags": ["#sunset", "#harbour"], "alt_text": "Boats at sunset."})


def test_outage_then_recovery_through_the_pipeline(make_ctx, tmp_path):
    with FakeOpenAI() as fake:
        ctx = make_ctx(captioner={"default": "openai", "openai": {
            "model": "gpt-test", "api_key": "sk-test-key", "base_url": fake.base_url, "timeout": 5.0,
            "max_retries": 0}})
        ctx.cfg.retry.base_delay_seconds, ctx.cfg.retry.max_delay_seconds = 30, 60
        fake.reply(openai_error(503, "upstream overloaded", "server_error"))
        outage = metrics.ERRORS.labels(stage="caption", platform="openai", error_class="server_error")
        counted = outage._value.get()
        wid = add_watch(ctx, tmp_path / "in")
        drain(ctx)
        for name in ("a.jpg", "b.jpg"):
            write_image(tmp_path / "in", name, size=(800, 600))
        make_due(ctx, wid)
        drain(ctx)
        with session_scope(ctx.engine) as s:
            waiting = list(s.exec(select(Post).order_by(Post.id)))
        assert [p.status for p in waiting] == [states.DOWNLOADED, states.DOWNLOADED]
        assert all("captioner openai is paused" in p.last_error and "503" in p.last_error for p in waiting)
        assert len(fake.requests) == 1  # paused after the first failure, not one failure per post
        assert outage._value.get() == counted + 1  # visible in /metrics as aiposter_errors_total

        fake.reply(openai_completion(answer(), usage=(900, 50)))
        with session_scope(ctx.engine) as s:  # time passes: the pause ends, the first post due probes
            s.execute(sa.update(Pause).values(until=utcnow()))
            s.execute(sa.update(Post).where(Post.id == waiting[0].id).values(next_attempt_at=utcnow()))
        drain(ctx)
        with session_scope(ctx.engine) as s:
            done = list(s.exec(select(Post).order_by(Post.id)))
        assert [p.status for p in done] == [states.PUBLISHED, states.PUBLISHED]
        for p in done:
            assert p.captioner == "openai"
            assert p.captions["outbox"].startswith("Golden hour over the harbour.")
            assert "#sunset" in p.captions["outbox"]
            assert p.usage == {"provider": "openai", "model": "gpt-test", "input_tokens": 900, "output_tokens": 50}
        sent = fake.requests[-1].json()
        assert sent["model"] == "gpt-test"
        assert FakeOpenAI.image(fake.requests[-1])[:2] == b"\xff\xd8"  # the photo itself, as JPEG
