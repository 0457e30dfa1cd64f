"""The Drive client through google-api-python-client + google-auth against the fake: token refresh,
every fault mapped to a SourceError code, downloads that are capped and verified, threads, revoke."""

from __future__ import annotations

import hashlib
import socket
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fakes.drive import SCOPE_METADATA

from aiposter.core.errors import ImageError, SourceError
from aiposter.sources.google_drive import DriveClient, DriveSettings, revoke_token

from .conftest import settings_for

# ------------------------------------------------------------------ tokens


def test_expired_access_token_is_refreshed_retried_and_reported(fake, client, refreshed):
    token = client.start_page_token()
    old = client.secrets["token"]
    fake.expire_access_tokens()
    fake.reset_counts()
    client.read_changes(token)
    assert fake.counts == {"changes.list": 2, "token": 1}  # 401, refresh, retried
    assert len(refreshed) == 1 and refreshed[0]["token"] != old
    assert refreshed[0]["refresh_token"] == client.secrets["refresh_token"]
    assert datetime.fromisoformat(refreshed[0]["expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    fake.reset_counts()
    client.read_changes(token)
    assert fake.counts == {"changes.list": 1}


def test_a_stored_expiry_in_the_past_refreshes_before_the_request(fake, refreshed):
    secrets = fake.issue_tokens()
    fake.expire_access_tokens()
    secrets["expiry"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    client = DriveClient(secrets, settings_for(fake), on_refresh=refreshed.append)
    fake.reset_counts()
    client.start_page_token()
    assert fake.counts == {"token": 1, "changes.getStartPageToken": 1}  # no 401 round trip
    assert len(refreshed) == 1


def test_a_revoked_refresh_token_is_an_auth_error(fake, client):
    fake.revoke_refresh_tokens()
    with pytest.raises(SourceError) as err:
        client.start_page_token()
    assert err.value.code == "auth" and err.value.permanent
    assert "invalid_grant" in str(err.value) and "reconnect" in str(err.value)


def test_a_wrong_client_secret_is_a_config_error(fake):
    secrets = fake.issue_tokens()
    secrets["client_secret"] = "wrong"
    fake.expire_access_tokens()
    with pytest.raises(SourceError) as err:
        DriveClient(secrets, settings_for(fake)).start_page_token()
    assert err.value.code == "config" and "oauth.google" in str(err.value)


def test_a_token_without_the_download_scope_is_an_auth_error_on_download(fake, tmp_path):
    client = DriveClient(fake.issue_tokens(scopes=(SCOPE_METADATA,)), settings_for(fake))
    fid = fake.add_file("a.jpg", content=b"abc")
    with pytest.raises(SourceError) as err:
        client.download(fid, tmp_path / "a.jpg", 1000)
    assert err.value.code == "auth" and "drive.readonly" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_token_still_refused_after_refresh_is_auth(fake, client):
    token = client.start_page_token()
    fake.fail_next("changes.list", 401, times=3)
    with pytest.raises(SourceError) as err:
        client.read_changes(token)
    assert err.value.code == "auth"
    assert fake.counts["token"] == 2  # google-auth's bounded refresh attempts, then it gives up


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize("status, reason, retry_after, code, wait", [
    (403, "userRateLimitExceeded", "7", "rate_limited", 7.0),
    (403, "rateLimitExceeded", None, "rate_limited", None),
    (429, "rateLimitExceeded", "12", "rate_limited", 12.0),
    (403, "dailyLimitExceeded", None, "quota", None),
    (500, "backendError", None, "server_error", None),
    (503, "backendError", "3", "server_error", 3.0),
])
def test_transient_faults(fake, client, status, reason, retry_after, code, wait):
    token = client.start_page_token()
    fake.fail_next("changes.list", status, reason, retry_after=retry_after)
    with pytest.raises(SourceError) as err:
        client.read_changes(token)
    assert (err.value.code, err.value.permanent, err.value.retry_after) == (code, False, wait)
    assert client.read_changes(token).new_token  # the next call goes through


def test_retry_after_as_an_http_date(fake, client):
    when = datetime.now(UTC) + timedelta(seconds=90)
    fake.fail_next("changes.getStartPageToken", 429, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(SourceError) as err:
        client.start_page_token()
    assert 80 <= err.value.retry_after <= 91


def test_an_html_error_page_is_a_server_error(fake, client):
    fake.fail_next("changes.getStartPageToken", 502, body=b"<html><body>Bad Gateway</body></html>")
    with pytest.raises(SourceError) as err:
        client.start_page_token()
    assert err.value.code == "server_error" and "502" in str(err.value)


def test_timeout_and_unreachable(fake):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, timeout_seconds=0.3))
    fake.fail_next("changes.getStartPageToken", 200, hang=5)
    with pytest.raises(SourceError) as err:
        client.start_page_token()
    assert err.value.code == "timeout" and not err.value.permanent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = DriveClient(fake.issue_tokens(), DriveSettings(api_url=f"http://127.0.0.1:{port}/drive/v3",
                                                          token_uri=fake.token_uri))
    with pytest.raises(SourceError) as err:
        dead.start_page_token()
    assert err.value.code == "connection" and not err.value.permanent


def test_permanent_faults_name_the_problem(fake, client):
    with pytest.raises(SourceError) as err:
        client.get_file("1doesNotExist000")
    assert err.value.code == "not_found" and err.value.permanent
    with pytest.raises(SourceError) as err:
        client.get_raw(fake.root_id, "id,bogus")
    assert err.value.code == "bad_request" and "bogus" in str(err.value)
    fake.fail_next("files.get", 403, "accessNotConfigured", message="Drive API has not been used in project 1")
    with pytest.raises(SourceError) as err:
        client.get_file(fake.root_id)
    assert err.value.code == "config"


# ------------------------------------------------------------------ downloads


def test_download_streams_in_range_chunks_and_verifies_md5(fake, tmp_path):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, download_chunk_bytes=1024))
    data = bytes(range(256)) * 20 + b"tail"
    fid = fake.add_file("big.jpg", content=data)
    fake.reset_counts()
    got = client.download(fid, tmp_path / "out" / "big.jpg", 10_000)
    assert (tmp_path / "out" / "big.jpg").read_bytes() == data
    assert got.md5 == hashlib.md5(data).hexdigest() and got.size == len(data)
    assert fake.counts == {"files.get": 1, "files.get_media": 6}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["big.jpg"]


def test_download_of_an_empty_file(fake, client, tmp_path):
    fid = fake.add_file("empty.jpg", content=b"")
    assert client.download(fid, tmp_path / "e.jpg", 100).size == 0


def test_size_cap_before_the_download(fake, client, tmp_path):
    fid = fake.add_file("huge.jpg", content=b"x" * 5000)
    fake.reset_counts()
    with pytest.raises(ImageError) as err:
        client.download(fid, tmp_path / "h.jpg", 4096)
    assert err.value.code == "too_large" and "images.max_file_bytes" in str(err.value)
    assert fake.counts["files.get_media"] == 0
    assert list(tmp_path.iterdir()) == []


def test_size_cap_while_streaming_when_metadata_lies(fake, tmp_path):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, download_chunk_bytes=1024))
    fid = fake.add_file("liar.jpg", content=b"x" * 50_000)
    fake.misreport_size(fid, 1000)
    fake.reset_counts()
    with pytest.raises(ImageError) as err:
        client.download(fid, tmp_path / "l.jpg", 4096)
    assert err.value.code == "too_large"
    assert fake.counts["files.get_media"] <= 5  # stopped near the cap, not after 50 chunks
    assert list(tmp_path.iterdir()) == []


def test_md5_mismatch_deletes_the_partial_file(fake, client, tmp_path):
    fid = fake.add_file("a.jpg", content=b"real bytes")
    fake.corrupt_media(fid, b"evil bytes")
    with pytest.raises(SourceError) as err:
        client.download(fid, tmp_path / "a.jpg", 1000)
    assert err.value.code == "checksum" and not err.value.permanent
    assert list(tmp_path.iterdir()) == []


def test_a_fault_mid_download_cleans_up_and_is_transient(fake, tmp_path):
    client = DriveClient(fake.issue_tokens(), settings_for(fake, download_chunk_bytes=100))
    fid = fake.add_file("a.jpg", content=b"y" * 450)
    fake.fail_next("files.get_media", 503, after=2)
    with pytest.raises(SourceError) as err:
        client.download(fid, tmp_path / "a.jpg", 1000)
    assert err.value.code == "server_error"
    assert list(tmp_path.iterdir()) == []
    assert client.download(fid, tmp_path / "a.jpg", 1000).size == 450


def test_trashed_deleted_native_and_shortcut_downloads(fake, client, tmp_path):
    trashed = fake.add_file("t.jpg", content=b"t")
    fake.trash(trashed)
    deleted = fake.add_file("d.jpg", content=b"d")
    fake.delete(deleted)
    doc = fake.add_native("Notes")
    target = fake.add_file("target.jpg", content=b"target bytes")
    shortcut = fake.add_shortcut(target)
    for fid, code in [(trashed, "trashed"), (deleted, "not_found"), (doc, "not_downloadable")]:
        with pytest.raises(SourceError) as err:
            client.download(fid, tmp_path / "x.jpg", 1000)
        assert (err.value.code, err.value.permanent) == (code, True)
    got = client.download(shortcut, tmp_path / "s.jpg", 1000)
    assert got.path.read_bytes() == b"target bytes" and got.name == "target.jpg"


# ------------------------------------------------------------------ threads


def test_threads_get_their_own_http_and_share_refreshed_tokens(fake, client, tmp_path):
    token = client.start_page_token()
    fid = fake.add_file("a.jpg", content=b"abc" * 100)
    states, errors = [], []
    barrier = threading.Barrier(4)

    def work(n):
        try:
            states.append(client._state())
            barrier.wait(timeout=5)
            for k in range(10):
                client.read_changes(token)
                client.download(fid, tmp_path / f"{n}-{k}.jpg", 10_000)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len({id(s.service) for s in states}) == 4
    assert len(list(tmp_path.glob("*.jpg"))) == 40 and not list(tmp_path.glob("*.part"))

    # a refresh in one thread is adopted by another instead of a second refresh
    other = []
    t = threading.Thread(target=lambda: other.append(client._state()))
    t.start()
    t.join()
    fake.expire_access_tokens()
    fake.reset_counts()
    client.read_changes(token)  # this thread refreshes
    t = threading.Thread(target=lambda: client.read_changes(token))
    t.start()
    t.join()
    assert fake.counts["token"] == 1


# ------------------------------------------------------------------ revoke


def test_revoke_is_best_effort(fake, client):
    refresh = client.secrets["refresh_token"]
    assert revoke_token(refresh, fake.revoke_uri).ok
    assert fake.revoked == [refresh]
    with pytest.raises(SourceError) as err:  # the access token went with it
        client.start_page_token()
    assert err.value.code == "auth"
    again = revoke_token(refresh, fake.revoke_uri)
    assert again.ok and "already" in again.message
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = revoke_token(refresh, f"http://127.0.0.1:{port}/revoke", timeout_seconds=1)
    assert not down.ok and "cannot reach" in down.message
