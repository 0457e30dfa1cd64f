"""Facebook Page photo posts against the fake Graph server: upload, permalink, and recovery of a
one-shot upload whose outcome was lost."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from fakes.meta import commit_then_drop, commit_then_hang, graph_error

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published
from aiposter.publishers.meta.facebook import FacebookPage
from aiposter.publishers.meta.graph import Timeouts

from .conftest import request


@pytest.fixture
def page(graph, graph_client):
    token = graph.add_page("p1", "Bakery")
    return FacebookPage(graph_client(token), "p1", settle_seconds=0)


def test_publish_uploads_the_bytes_with_caption_alt_text_and_reads_the_permalink(graph, page, photo):
    req = request(media_path=photo)

    def checkpoint(handle):  # committed before the upload: the fake has seen no upload yet
        assert graph.calls("photos") == []
        seen.append(handle)
    seen: list[dict] = []
    req.checkpoint = checkpoint
    result = page.publish(req)
    [post] = graph.page_posts("p1")
    assert result == Published(post["id"], post["permalink_url"])
    assert post["message"] == req.caption and post["alt_text"] == req.alt_text
    assert post["image_sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert seen[0]["step"] == "upload" and seen[0]["caption"] == req.caption and seen[0]["sent_at"]
    assert "url" not in graph.calls("photos")[0].params  # bytes, no public URL needed


def test_upload_committed_then_connection_dropped_is_ambiguous_then_recover_adopts_it(graph, page, photo):
    req = request(media_path=photo)
    graph.fail("photos", commit_then_drop())
    with pytest.raises(PublishError) as exc:
        page.publish(req)
    assert exc.value.ambiguous
    req.handle = req.checkpoint.handles[-1]
    found = page.recover(req)
    [post] = graph.page_posts("p1")
    assert found == Published(post["id"], post["permalink_url"])
    assert len(graph.calls("photos")) == 1  # exactly once: recovery never re-sent


def test_timeout_after_the_upload_is_recovered_from_the_photos_listing_too(graph, graph_client, photo):
    token = graph.add_page("p1", "Bakery")
    page = FacebookPage(graph_client(token, timeouts=Timeouts(connect=1, read=0.3)), "p1", settle_seconds=0)
    req = request(media_path=photo)
    graph.fail("photos", commit_then_hang(3))
    graph.fail("list_posts", graph_error(1, message="An unknown error occurred", status=500))
    with pytest.raises(PublishError) as exc:
        page.publish(req)
    assert exc.value.ambiguous and exc.value.code == "timeout"
    req.handle = req.checkpoint.handles[-1]
    with pytest.raises(PublishError) as transient:  # cannot look now: a transient error, not a verdict
        page.recover(req)
    assert transient.value.code == "server_error" and not transient.value.permanent
    assert page.recover(req).platform_post_id == graph.page_posts("p1")[0]["id"]


def test_recover_answers_not_there_only_after_the_settle_time(graph, graph_client, photo):
    token = graph.add_page("p1", "Bakery")
    page = FacebookPage(graph_client(token), "p1", settle_seconds=120)
    sent = datetime.now(UTC)
    req = request(media_path=photo, handle={"step": "upload", "sent_at": sent.isoformat(), "caption": "lost one"})
    pending = page.recover(req)
    assert isinstance(pending, Pending) and 0 < pending.wait_seconds <= 120
    later = FacebookPage(page.client, "p1", settle_seconds=120, now=lambda: sent + timedelta(seconds=121))
    assert later.recover(req) is None
    assert later.publish(req).platform_post_id == graph.page_posts("p1")[0]["id"]
    assert len(graph.page_posts("p1")) == 1


def test_recover_ignores_the_same_caption_posted_before_the_attempt(graph, page, photo):
    graph.clock_offset = -86400  # yesterday's post with the very same caption
    page.publish(request(media_path=photo))
    graph.clock_offset = 0
    req = request(media_path=photo, handle={"step": "upload", "sent_at": datetime.now(UTC).isoformat(),
                                            "caption": "Fresh sourdough #bakery"})
    assert page.recover(req) is None


def test_recover_pages_through_a_busy_page(graph, page, photo):
    req = request(media_path=photo, caption="the one to find")
    graph.fail("photos", commit_then_drop())
    with pytest.raises(PublishError):
        page.publish(req)
    for i in range(60):  # newer posts by someone else push ours to the third page of the listing
        page.publish(request(media_path=photo, caption=f"other {i}"))
    req.handle = req.checkpoint.handles[-1]
    found = page.recover(req)
    assert found.platform_post_id == next(p["id"] for p in graph.page_posts("p1") if p["message"] == "the one to find")
    assert sum(1 for p in graph.page_posts("p1") if p["message"] == "the one to find") == 1
    assert any("after" in r.params for r in graph.calls("list_posts"))


def test_recover_without_a_handle_or_start_time_means_nothing_was_sent(page, photo):
    req = request(media_path=photo)
    req.attempt_started_at = None
    assert page.recover(req) is None


def test_a_revoked_page_token_is_an_auth_error(graph, page, photo):
    graph.revoke(graph.pages["p1"]["token"], 460)
    with pytest.raises(PublishError) as exc:
        page.publish(request(media_path=photo))
    assert exc.value.code == "auth" and exc.value.permanent and "password" in exc.value.message
    assert graph.page_posts("p1") == []


def test_a_missing_prepared_image_fails_before_anything_is_sent(graph, page, tmp_path):
    req = request(media_path=tmp_path / "gone.jpg")
    with pytest.raises(PublishError) as exc:
        page.publish(req)
    assert exc.value.code == "media_missing" and exc.value.permanent
    assert req.checkpoint.handles == [] and graph.calls("photos") == []


def test_facebook_refusing_the_file_is_a_readable_media_error(graph, page, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(PublishError) as exc:
        page.publish(request(media_path=bad))
    assert exc.value.code == "media" and exc.value.permanent and "invalid image file" in exc.value.message


def test_publish_again_after_a_lost_answer_looks_first_and_does_not_upload_twice(graph, page, photo):
    req = request(media_path=photo)
    graph.fail("photos", commit_then_drop())
    with pytest.raises(PublishError):
        page.publish(req)
    req.handle = req.checkpoint.handles[-1]
    again = page.publish(req)  # a pipeline that retries instead of recovering
    assert again.platform_post_id == graph.page_posts("p1")[0]["id"]
    assert len(graph.calls("photos")) == 1


def test_the_same_caption_twice_never_adopts_another_targets_post(graph, graph_client, photo):
    token = graph.add_page("p1", "Bakery")
    owned: set[str] = set()
    page = FacebookPage(graph_client(token), "p1", settle_seconds=0, claimed=lambda: owned)
    req = request(media_path=photo)
    first = page.publish(request(media_path=photo))  # another photo, same template caption
    owned.add(first.platform_post_id)
    req.handle = {"step": "upload", "sent_at": datetime.now(UTC).isoformat(), "caption": req.caption}
    assert page.recover(req) is None  # ours never landed; the other target's post is not ours
