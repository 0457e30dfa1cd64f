"""The signed, expiring media route a platform fetches a post's image from (GET and HEAD)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from helpers import jpeg_bytes

from aiposter.core import states
from aiposter.core.media import MediaUrls, post_key, urls_for
from aiposter.core.models import Post, utcnow
from aiposter.crypto import Keyring, new_key
from aiposter.db import session_scope
from aiposter.services import users, watches


@pytest.fixture
def in_flight(application, photos):
    """A captioned post whose prepared image is in the media store: (post id, the image's bytes)."""
    data = jpeg_bytes(size=(320, 200))
    with session_scope(application.engine) as s:
        owner = users.create_user(s, "ann@example.com")
        w = watches.create_watch(s, application.cfg, owner, watches.WatchSpec(folder=str(photos)),
                                 allow_any_folder=True)
        post = Post(user_id=owner.id, watch_id=w.id, source_ref="a.jpg", file_name="a.jpg",
                    status=states.CAPTIONED, media_key=None)
        s.add(post)
        s.flush()
        post.media_key = post_key(post.id)
        post_id = post.id
    work = application.media.work_path(post_id, "prepared")
    work.write_bytes(data)
    application.media.put(post_key(post_id), work)
    return post_id, data


def _path(url: str) -> str:
    return urlsplit(url).path


def test_a_signed_link_serves_the_jpeg_with_length_and_no_caching(client, application, in_flight):
    post_id, data = in_flight
    url = urls_for(application.cfg, application.keyring).url(post_id, utcnow())
    assert url.startswith(f"https://poster.example/media/{post_id}/") and url.endswith(".jpg")
    r = client.get(_path(url))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["cache-control"] == "private, no-store"
    head = client.head(_path(url))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "image/jpeg"
    assert head.headers["content-length"] == str(len(data))


def test_every_refusal_is_the_same_404(client, application, in_flight):
    post_id, _ = in_flight
    urls = urls_for(application.cfg, application.keyring)
    good = _path(urls.url(post_id, utcnow()))
    prefix, sig = good.rsplit("/", 1)
    tampered = f"{prefix}/{sig[:-5]}{'A' if sig[-5] != 'A' else 'B'}.jpg"
    expired = _path(urls.url(post_id, utcnow() - timedelta(seconds=application.cfg.media.url_ttl_seconds + 5)))
    other_post = good.replace(f"/media/{post_id}/", f"/media/{post_id + 1}/")
    foreign = _path(MediaUrls(Keyring(new_key()), "https://x", 3600).url(post_id, utcnow()))
    longer = good.replace(f"/{prefix.rsplit('/', 1)[1]}/", f"/{int(prefix.rsplit('/', 1)[1]) + 3600}/")
    for path in (tampered, expired, other_post, foreign, longer, "/media/", f"/media/{post_id}",
                 f"/media/{post_id}/1/x.jpg"):
        for method in ("GET", "HEAD"):
            r = client.request(method, path)
            assert r.status_code == 404, (method, path)
    assert client.get(good).status_code == 200  # the genuine link still works


@pytest.mark.parametrize("change", ["finished", "file_gone", "post_deleted"])
def test_a_link_stops_working_when_the_post_is_done_or_its_image_gone(client, application, in_flight, change):
    post_id, _ = in_flight
    path = _path(urls_for(application.cfg, application.keyring).url(post_id, utcnow()))
    assert client.head(path).status_code == 200
    with session_scope(application.engine) as s:
        post = s.get(Post, post_id)
        if change == "finished":
            post.status = states.PUBLISHED
        elif change == "post_deleted":
            s.delete(post)
    if change == "file_gone":
        application.media.delete_post(post_id)
    assert client.get(path).status_code == 404
    assert client.head(path).status_code == 404


def test_links_signed_before_a_key_rotation_still_verify():
    old, new = new_key(), new_key()
    before = MediaUrls(Keyring(old), "https://x", 3600)
    after = MediaUrls(Keyring(new, [old]), "https://x", 3600)
    now = utcnow()
    _, _, post, expires, sig = _path(before.url(7, now)).split("/")
    assert after.verify(7, int(expires), sig.removesuffix(".jpg"), now)
    assert not MediaUrls(Keyring(new), "https://x", 3600).verify(7, int(expires), sig.removesuffix(".jpg"), now)


def test_a_fitted_copy_has_its_own_signed_link(client, application, in_flight):
    post_id, data = in_flight
    fitted = jpeg_bytes(size=(320, 400))
    work = application.media.work_path(post_id, "instagram.prepared")
    work.write_bytes(fitted)
    application.media.put(post_key(post_id, "instagram"), work)
    urls = urls_for(application.cfg, application.keyring)
    url = urls.url(post_id, utcnow(), "instagram")
    assert f"/media/{post_id}/instagram/" in url
    r = client.get(_path(url))
    assert r.status_code == 200 and r.content == fitted and r.headers["content-type"] == "image/jpeg"
    assert client.head(_path(url)).headers["content-length"] == str(len(fitted))
    # the variant is signed: the link cannot be turned into one for another copy, or for the original
    assert client.get(_path(url).replace("/instagram/", "/threads/")).status_code == 404
    assert client.get(_path(url).replace("/instagram/", "/")).status_code == 404
    # a variant never made answers like any other refusal
    assert client.get(_path(urls.url(post_id, utcnow(), "threads"))).status_code == 404


def test_a_fetch_is_served_while_the_pipeline_holds_the_write_lock(client, application, in_flight):
    """The platforms fetch while the pipeline writes: the route reads a snapshot and never queues
    behind a write transaction (on SQLite it took the write lock and waited for it)."""
    post_id, data = in_flight
    url = urls_for(application.cfg, application.keyring).url(post_id, utcnow())
    with session_scope(application.engine) as s:  # a pipeline transaction in progress, write lock taken
        post = s.get(Post, post_id)
        post.last_error = "a step in progress"
        s.flush()
        r = client.get(_path(url))
        assert r.status_code == 200 and r.content == data
