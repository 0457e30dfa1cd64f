"""Notification URLs through the API: masked, owner-only, a test message to a loopback receiver."""

from __future__ import annotations

from test_notify import Receiver


def test_notify_channels_and_test_message(client, ann, bob):
    receiver = Receiver()
    try:
        url = receiver.url.replace("/hook", "/hook-s3cret")
        r = client.post("/api/v1/notify/channels", headers=ann.headers, json={"url": url, "label": "team"})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        assert "s3cret" not in r.text
        listed = client.get("/api/v1/notify/channels", headers=ann.headers)
        assert [c["id"] for c in listed.json()] == [cid] and "s3cret" not in listed.text
        assert client.get("/api/v1/notify/channels", headers=bob.headers).json() == []
        assert client.delete(f"/api/v1/notify/channels/{cid}", headers=bob.headers).status_code == 404
        r = client.post("/api/v1/notify/test", headers=ann.headers)
        assert r.status_code == 200 and r.json() == {"ok": True, "error": None}
        assert receiver.messages[0]["title"] == "aiposter: test notification"
        assert client.post("/api/v1/notify/test", headers=bob.headers).status_code == 422  # no URL yet
        bad = client.post("/api/v1/notify/channels", headers=ann.headers, json={"url": "nosuch://x"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "url"
        assert client.delete(f"/api/v1/notify/channels/{cid}", headers=ann.headers).status_code == 200
        assert client.get("/api/v1/notify/channels", headers=ann.headers).json() == []
    finally:
        receiver.close()
