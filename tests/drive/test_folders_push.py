"""Folder links and checks, the folder picker, and push channels (delivered by the fake to a receiver)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes.drive import FakeDrive

from aiposter.core.errors import SourceError
from aiposter.sources.google_drive import (
    DriveClient,
    FolderLinkError,
    PushChannel,
    PushRejected,
    channel_id_of,
    check_folder,
    list_folders,
    parse_folder_id,
    renew,
    renew_due,
    subscribe,
    unsubscribe,
    verify_notification,
)

from .conftest import settings_for

FID = "1AbCdEfGhIjKlMnOpQrStUvWxYz_-123"


@pytest.mark.parametrize("text", [
    FID, f"  {FID} ",
    f"https://drive.google.com/drive/folders/{FID}",
    f"https://drive.google.com/drive/folders/{FID}?usp=sharing",
    f"https://drive.google.com/drive/folders/{FID}?resourcekey=0-abcDEF&usp=drive_link",
    f"https://drive.google.com/drive/u/0/folders/{FID}",
    f"https://drive.google.com/drive/u/3/folders/{FID}/",
    f"https://drive.google.com/drive/mobile/folders/{FID}",
    f"https://drive.google.com/open?id={FID}",
    f"https://drive.google.com/folderview?id={FID}&usp=sharing",
    f"drive.google.com/drive/folders/{FID}",
])
def test_parse_folder_id(text):
    assert parse_folder_id(text) == FID


@pytest.mark.parametrize("text, says", [
    ("", "folder link"),
    (f"https://drive.google.com/file/d/{FID}/view", "single file"),
    (f"https://docs.google.com/document/d/{FID}/edit", "single file"),
    (f"https://example.com/drive/folders/{FID}", "not a Google Drive link"),
    ("https://drive.google.com/drive/my-drive", "no folder id"),
    ("hello world", "not a Google Drive link"),
])
def test_parse_folder_id_says_what_is_wrong(text, says):
    with pytest.raises(FolderLinkError, match=says):
        parse_folder_id(text)


def test_check_folder(fake, client):
    photos = fake.add_folder("Photos")
    team = fake.add_shared_drive("Team")
    shots = fake.add_folder("Shots", team)
    assert check_folder(client, photos).name == "Photos"
    info = check_folder(client, shots)
    assert (info.name, info.drive_id) == ("Shots", team)
    assert check_folder(client, "root").id == fake.root_id
    assert check_folder(client, fake.add_shortcut(photos, "root", name="link")).id == photos
    file_id = fake.add_file("a.jpg", photos)
    gone = fake.add_folder("Gone")
    fake.delete(gone)
    binned = fake.add_folder("Binned")
    fake.trash(binned)
    locked = fake.add_folder("Locked")
    fake.restrict_listing(locked)
    for fid, code, says in [(file_id, "not_a_folder", "'a.jpg' is a file (image/jpeg)"),
                            (gone, "folder_not_found", "cannot open it"),
                            (binned, "folder_trashed", "in the trash"),
                            (locked, "folder_unreadable", "not list")]:
        with pytest.raises(SourceError) as err:
            check_folder(client, fid)
        assert (err.value.code, err.value.permanent) == (code, True)
        assert says in str(err.value)


def test_folder_picker(fake, client):
    a = fake.add_folder("Beta")
    fake.add_folder("Alpha")
    fake.add_folder("Inner", a)
    fake.add_file("not-a-folder.jpg")
    team = fake.add_shared_drive("Team Drive")
    fake.add_folder("Team Alpha", team)
    top = list_folders(client)
    assert [f.name for f in top.folders] == ["Alpha", "Beta"]
    assert [(d.name, d.id) for d in top.shared_drives] == [("Team Drive", team)]
    assert [f.name for f in list_folders(client, parent=a).folders] == ["Inner"]
    assert [f.name for f in list_folders(client, parent=team).folders] == ["Team Alpha"]
    found = list_folders(client, query="alpha")
    assert [f.name for f in found.folders] == ["Alpha", "Team Alpha"]
    paged = list_folders(client, page_size=1)
    assert len(paged.folders) == 1 and paged.next_page_token
    rest = list_folders(client, page_size=1, page_token=paged.next_page_token)
    assert [f.name for f in rest.folders] == ["Beta"] and rest.shared_drives == []


def _wait(fake: FakeDrive, receiver, n: int):
    assert fake.wait_for(lambda: len(receiver.received) >= n), f"expected {n} notifications"
    return receiver.received[n - 1]


def test_push_notifications_are_delivered_and_verified(fake, client, receiver):
    token = client.start_page_token()
    ch = subscribe(client, token, receiver.url, ttl=timedelta(days=30))
    assert ch.expires_at <= datetime.now(UTC) + timedelta(days=7, minutes=1)  # Google's ceiling
    sync = verify_notification(_wait(fake, receiver, 1), ch)
    assert sync.state == "sync" and not sync.should_poll
    fake.add_file("a.jpg", fake.add_folder("Photos"))
    headers = _wait(fake, receiver, 2)
    note = verify_notification(headers, ch)
    assert note.should_poll and note.channel_id == ch.id and channel_id_of(headers) == ch.id
    assert headers["x-goog-channel-expiration"].endswith("GMT")
    # forged or misdirected messages are rejected
    with pytest.raises(PushRejected):
        verify_notification({**headers, "x-goog-channel-token": "guess"}, ch)
    with pytest.raises(PushRejected):
        verify_notification({k: v for k, v in headers.items() if k != "x-goog-channel-token"}, ch)
    with pytest.raises(PushRejected):
        verify_notification({**headers, "x-goog-resource-id": "other"}, ch)
    with pytest.raises(PushRejected):
        verify_notification(headers, None)
    canonical = {"-".join(p.capitalize() if p != "id" else "ID" for p in k.split("-")): v for k, v in headers.items()}
    assert verify_notification(canonical, ch).should_poll  # header names are case-insensitive


def test_push_channels_renew_and_stop(fake, client, receiver):
    token = client.start_page_token()
    ch = subscribe(client, token, receiver.url, ttl=timedelta(hours=1))
    assert renew_due(ch) and not renew_due(ch, margin=timedelta(minutes=5))
    _wait(fake, receiver, 1)
    fresh = renew(client, ch, token)
    assert fresh.id != ch.id and fake.channels[ch.id].stopped
    _wait(fake, receiver, 2)  # the new channel's sync
    fake.add_file("a.jpg")
    headers = _wait(fake, receiver, 3)
    assert headers["x-goog-channel-id"] == fresh.id
    with pytest.raises(PushRejected):
        verify_notification(headers, ch)
    assert unsubscribe(client, fresh) is True
    assert unsubscribe(client, fresh) is False  # Google no longer knows it
    fake.add_file("b.jpg")
    assert fake.wait_for(fake.push_idle)
    assert len(receiver.received) == 3  # a stopped channel gets nothing


def test_push_needs_https_like_google():
    strict = FakeDrive(allow_http_push=False)
    try:
        client = DriveClient(strict.issue_tokens(), settings_for(strict))
        with pytest.raises(SourceError) as err:
            subscribe(client, client.start_page_token(), "http://poster.example/push")
        assert err.value.permanent and "HTTPS" in str(err.value)
    finally:
        strict.close()


def test_an_expired_channel_is_rejected():
    ch = PushChannel("c1", "r1", "secret", "https://x/push", datetime.now(UTC) - timedelta(hours=1))
    headers = {"X-Goog-Channel-ID": "c1", "X-Goog-Channel-Token": "secret", "X-Goog-Resource-ID": "r1",
               "X-Goog-Resource-State": "change"}
    with pytest.raises(PushRejected, match="expired"):
        verify_notification(headers, ch)
    assert verify_notification(headers, ch, now=ch.expires_at).should_poll
