"""Instagram's container flow against the fake Graph server, which really downloads the image from a
local HTTP server standing in for the daemon's public media route."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fakes.meta import FETCHER_UA, commit_then_drop, graph_error

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published
from aiposter.publishers.meta.instagram import InstagramAccount

from .conftest import jpeg, request


@pytest.fixture
def token(graph):
    return graph.add_page("p1", "Bakery", ig_id="ig1", ig_username="bakery.ig")


@pytest.fixture
def ig(graph_client, token):
    return InstagramAccount(graph_client(token), "ig1")


def test_container_in_progress_then_finished_then_published_across_separate_calls(graph, media, ig):
    graph.container_steps = 2  # two status reads say IN_PROGRESS
    req = request(media_url=media.add(jpeg((1080, 1350))))
    first = ig.publish(req)
    assert isinstance(first, Pending) and "IN_PROGRESS" in first.reason and first.wait_seconds > 0
    [committed] = req.checkpoint.handles
    assert committed["container_id"] == first.handle["container_id"]
    assert graph.calls("media_publish") == []
    # the image was fetched by "Meta", from our media route, as Meta's crawler
    crawled = [h for h in media.hits if h["user_agent"] == FETCHER_UA]
    assert graph.fetches[0]["user_agent"] == FETCHER_UA and graph.fetches[0]["status"] == 200
    assert len(crawled) == 2  # our probe, then the platform's own fetch

    req.handle = first.handle  # the pipeline stores the pending handle and calls again later
    second = ig.publish(req)
    assert isinstance(second, Pending) and second.wait_seconds > first.wait_seconds
    req.handle = second.handle
    done = ig.publish(req)
    [media_item] = graph.media_of("ig1")
    assert done == Published(media_item["id"], media_item["permalink"])
    assert media_item["caption"] == req.caption and media_item["alt_text"] == req.alt_text
    assert len(graph.containers) == 1 and graph.publish_count("ig1") == 1


def test_an_image_that_is_ready_at_once_is_published_in_one_call(graph, media, ig):
    result = ig.publish(request(media_url=media.add(jpeg((1080, 1080)))))
    assert isinstance(result, Published) and result.url.startswith("https://www.instagram.com/p/")


@pytest.mark.parametrize("size, fmt, words", [
    ((1600, 500), "JPEG", "aspect ratio"),     # 3.2:1, wider than 1.91:1
    ((500, 1000), "JPEG", "aspect ratio"),     # 1:2, taller than 4:5
    ((800, 800), "PNG", "format is not supported"),
])
def test_a_wrong_aspect_or_a_non_jpeg_is_a_readable_permanent_media_error(graph, media, graph_client, token,
                                                                          size, fmt, words):
    ig = InstagramAccount(graph_client(token), "ig1", probe=lambda url, who: None)  # the platform decides
    req = request(media_url=media.add(jpeg(size, fmt), "image/jpeg"))
    with pytest.raises(PublishError) as exc:
        ig.publish(req)
    assert exc.value.permanent and exc.value.code == "media" and words in exc.value.message
    assert graph.containers == {} and req.checkpoint.handles == []


def test_the_probe_explains_a_url_meta_cannot_fetch_before_any_container(graph, media, ig):
    png = media.add(jpeg((800, 800), "PNG"), "image/png")
    media.files["fake-jpeg"] = (b"<html>", "image/jpeg")
    for url, words in [(None, "public_url"), (png, "not image/jpeg"),
                       (f"{media.url}/m/fake-jpeg", "does not serve JPEG bytes"),
                       (f"{media.url}/m/expired?sig=x", "HTTP 404")]:
        with pytest.raises(PublishError) as exc:
            ig.publish(request(media_url=url))
        assert exc.value.code == "config" and words in exc.value.message, exc.value.message
    url = media.add(jpeg())
    media.mode = "challenge"
    with pytest.raises(PublishError) as exc:
        ig.publish(request(media_url=url))
    assert "HTML page" in exc.value.message and "?sig" not in exc.value.message  # the signature is not logged
    media.mode = "forbidden"
    with pytest.raises(PublishError) as exc:
        ig.publish(request(media_url=url))
    assert "HTTP 403" in exc.value.message and "crawler" in exc.value.message
    assert graph.containers == {} and graph.fetches == []


def test_quota_used_up_defers_with_the_reason_and_creates_no_container(graph, media, ig):
    now = time.time()
    graph.quota_total["ig1"] = 2
    graph.publishes["ig1"] = [now - 20 * 3600, now - 2 * 3600]
    req = request(media_url=media.add(jpeg()))
    with pytest.raises(PublishError) as exc:
        ig.publish(req)
    err = exc.value
    assert err.code == "quota" and not err.permanent
    assert "2 of 2 posts in 24 h" in err.message and "next slot in about 6 h" in err.message
    assert err.retry_after == 6 * 3600  # the 20-hour-old post leaves the window within 6 h
    assert graph.containers == {} and graph.fetches == [] and req.checkpoint.handles == []


def test_quota_reached_at_publish_time_keeps_the_container_and_defers(graph, media, ig):
    graph.container_steps = 1
    req = request(media_url=media.add(jpeg()))
    req.handle = ig.publish(req).handle
    graph.quota_total["ig1"] = 1
    graph.publishes["ig1"] = [time.time() - 3600]  # someone else used the last slot meanwhile
    with pytest.raises(PublishError) as exc:
        ig.publish(req)
    assert exc.value.code == "quota" and exc.value.retry_after == 24 * 3600  # wait, keep the handle
    assert exc.value.message.startswith("Instagram: ")
    assert len(graph.containers) == 1 and graph.media_of("ig1") == []


def test_publish_committed_then_dropped_is_ambiguous_and_recover_adopts_it_exactly_once(graph, media, ig):
    req = request(media_url=media.add(jpeg()))
    graph.fail("media_publish", commit_then_drop())
    with pytest.raises(PublishError) as exc:
        ig.publish(req)
    assert exc.value.ambiguous
    req.handle = req.checkpoint.handles[-1]
    adopted = ig.recover(req)
    [item] = graph.media_of("ig1")
    assert adopted == Published(item["id"], item["permalink"])
    assert graph.publish_count("ig1") == 1 and len(graph.calls("media_publish")) == 1


def test_recover_after_a_crash_before_publishing_continues_from_the_container(graph, media, ig):
    graph.container_steps = 1
    req = request(media_url=media.add(jpeg()))
    ig.publish(req)                               # created, committed, IN_PROGRESS; then the crash
    req.handle = req.checkpoint.handles[-1]       # what the database holds
    resumed = ig.recover(req)
    assert isinstance(resumed, Pending) and resumed.handle["container_id"] == req.handle["container_id"]
    req.handle = resumed.handle
    assert isinstance(ig.recover(req), Pending)   # FINISHED now: "continue", not "start over"
    assert isinstance(ig.publish(req), Published)
    assert len(graph.containers) == 1 and graph.publish_count("ig1") == 1


def test_recover_with_no_committed_container_means_nothing_was_published(ig):
    assert ig.recover(request(media_url="http://unused")) is None


@pytest.mark.parametrize("outcome, error, code, words", [
    ("ERROR", "Media upload has failed with error code 2207052", "media", "could not fetch the image"),
    ("EXPIRED", "", "container_gone", "expired"),
])
def test_a_failed_or_expired_container_fails_with_the_platform_status(graph, media, ig, outcome, error, code, words):
    graph.container_steps = 1
    graph.container_outcome, graph.container_error = ("ERROR", error) if outcome == "ERROR" else ("FINISHED", "")
    req = request(media_url=media.add(jpeg()))
    req.handle = ig.publish(req).handle
    if outcome == "EXPIRED":
        graph.expire_container(req.handle["container_id"])
    for step in (ig.publish, ig.recover):
        with pytest.raises(PublishError) as exc:
            step(req)
        assert exc.value.permanent and exc.value.code == code and words in exc.value.message
        assert not exc.value.ambiguous
    assert graph.calls("media_publish") == []


def test_a_container_that_never_finishes_fails_after_the_bounded_wait(graph, media, graph_client, token):
    graph.container_steps = 1000
    clock = [datetime.now(UTC)]
    ig = InstagramAccount(graph_client(token), "ig1", max_wait_seconds=600, now=lambda: clock[0])
    req = request(media_url=media.add(jpeg()))
    req.handle = ig.publish(req).handle
    clock[0] += timedelta(seconds=601)
    with pytest.raises(PublishError) as exc:
        ig.publish(req)
    assert exc.value.permanent and exc.value.code == "container_timeout" and "IN_PROGRESS" in exc.value.message


def test_media_not_ready_at_publish_waits_instead_of_failing(graph, media, ig):
    graph.fail("media_publish", graph_error(9007, 2207027, "Media ID is not available"))
    req = request(media_url=media.add(jpeg()))
    pending = ig.publish(req)
    assert isinstance(pending, Pending)
    req.handle = pending.handle
    assert isinstance(ig.publish(req), Published) and graph.publish_count("ig1") == 1


def test_a_revoked_token_is_auth(graph, media, ig, token):
    graph.revoke(token, 458)
    with pytest.raises(PublishError) as exc:
        ig.publish(request(media_url=media.add(jpeg())))
    assert exc.value.code == "auth" and exc.value.permanent and "app was removed" in exc.value.message


def test_an_expired_token_during_recovery_is_auth_not_ambiguous(graph, media, ig, token):
    req = request(media_url=media.add(jpeg()))
    graph.fail("media_publish", commit_then_drop())
    with pytest.raises(PublishError):
        ig.publish(req)
    graph.expire(token)
    req.handle = req.checkpoint.handles[-1]
    with pytest.raises(PublishError) as exc:
        ig.recover(req)
    assert exc.value.code == "auth" and not exc.value.ambiguous and "expired" in exc.value.message
