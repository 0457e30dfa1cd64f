"""Threads' IMAGE container flow and token refresh against the fake Threads server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes.meta import THREADS_APP_SECRET, commit_then_hang, graph_error

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published
from aiposter.publishers.meta.graph import Timeouts
from aiposter.publishers.meta.threads import ThreadsAccount
from aiposter.publishers.meta.tokens import refresh_threads_token, threads_refresh_state

from .conftest import jpeg, request


@pytest.fixture
def token(threads_fake):
    return threads_fake.add_user("777", "ann.threads")


@pytest.fixture
def th(threads_client, token):
    return ThreadsAccount(threads_client(token), "777")


def test_image_container_waits_then_publishes_with_text_and_alt_text(threads_fake, media, th):
    threads_fake.container_steps = 1
    req = request(caption="New loaf 🍞", media_url=media.add(jpeg((1080, 1350))))
    first = th.publish(req)
    assert isinstance(first, Pending) and "Threads is processing" in first.reason
    created = threads_fake.calls("threads")[0].params
    assert created["media_type"] == "IMAGE" and created["text"] == "New loaf 🍞"
    assert created["alt_text"] == req.alt_text and created["image_url"] == req.media_url
    assert req.checkpoint.handles[-1]["container_id"] == first.handle["container_id"]
    req.handle = first.handle
    done = th.publish(req)
    [post] = threads_fake.media_of("777")
    assert done == Published(post["id"], post["permalink"]) and "/@ann.threads/post/" in done.url
    assert threads_fake.publish_count("777") == 1


def test_an_aspect_ratio_threads_refuses_fails_with_its_error_message(threads_fake, media, th):
    req = request(media_url=media.add(jpeg((1200, 100))))  # 12:1, beyond Threads' 10:1
    with pytest.raises(PublishError) as exc:
        th.publish(req)
    assert exc.value.permanent and exc.value.code == "media"
    assert "aspect ratio" in exc.value.message and "INVALID_ASPEC_RATIO" in exc.value.message
    assert threads_fake.media_of("777") == []


def test_quota_used_up_defers_before_any_container(threads_fake, media, th):
    threads_fake.quota_total["777"] = 250
    threads_fake.publishes["777"] = [datetime.now(UTC).timestamp() - 60] * 250
    with pytest.raises(PublishError) as exc:
        th.publish(request(media_url=media.add(jpeg())))
    assert exc.value.code == "quota" and "250 of 250" in exc.value.message and exc.value.retry_after == 86400
    assert threads_fake.containers == {}


def test_publish_timeout_after_commit_is_ambiguous_then_recovered_exactly_once(threads_fake, media, threads_client,
                                                                                token):
    th = ThreadsAccount(threads_client(token, timeouts=Timeouts(connect=1, read=0.3)), "777")
    req = request(media_url=media.add(jpeg()))
    threads_fake.fail("threads_publish", commit_then_hang(3))
    with pytest.raises(PublishError) as exc:
        th.publish(req)
    assert exc.value.ambiguous and exc.value.code == "timeout"
    req.handle = req.checkpoint.handles[-1]
    adopted = th.recover(req)
    [post] = threads_fake.media_of("777")
    assert adopted.platform_post_id == post["id"]
    assert threads_fake.publish_count("777") == 1 and len(threads_fake.calls("threads_publish")) == 1


def test_restricted_account_and_revoked_token_are_auth(threads_fake, media, th, token):
    threads_fake.fail("threads", graph_error(10, 4279013, "The user is restricted"))
    with pytest.raises(PublishError) as exc:
        th.publish(request(media_url=media.add(jpeg())))
    assert exc.value.code == "auth"
    threads_fake.revoke(token, 460)
    with pytest.raises(PublishError) as exc:
        th.publish(request(media_url=media.add(jpeg())))
    assert exc.value.code == "auth" and exc.value.permanent


def test_refresh_state_follows_the_tokens_age():
    now = datetime(2025, 6, 1, tzinfo=UTC)
    fresh = now + timedelta(days=60) - timedelta(hours=3)
    assert threads_refresh_state(fresh, now=now) == "ok"                    # hours old: Meta refuses
    assert threads_refresh_state(fresh - timedelta(days=1), now=now) == "refresh"
    assert threads_refresh_state(now + timedelta(days=2), now=now) == "refresh"
    assert threads_refresh_state(now - timedelta(seconds=1), now=now) == "expired"
    assert threads_refresh_state(fresh, now=now, refreshed_at=now - timedelta(days=2)) == "refresh"


def test_refreshing_a_day_old_token_gives_a_new_60_day_token(threads_fake):
    old = threads_fake.add_user("888", "bob", age=2 * 86400, expires_in=60 * 86400)
    now = datetime.now(UTC)
    fresh = refresh_threads_token(threads_fake.url, old, app_secret=THREADS_APP_SECRET, now=now)
    assert fresh.access_token != old and threads_fake.tokens[fresh.access_token].subject == "888"
    assert fresh.expires_at == now + timedelta(seconds=5183944)
    call = threads_fake.calls("refresh_access_token")[0]
    assert call.path == "/refresh_access_token" and call.params["grant_type"] == "th_refresh_token"


def test_refreshing_an_expired_token_is_auth(threads_fake):
    dead = threads_fake.add_user("888", "bob", age=61 * 86400, expires_in=60 * 86400)
    with pytest.raises(PublishError) as exc:
        refresh_threads_token(threads_fake.url, dead)
    assert exc.value.code == "auth" and "expired" in exc.value.message
