"""The fake is only useful if it is as strict as Google: these pin the wire shapes it answers with,
through the real google-api-python-client, google-auth and google-auth-oauthlib."""

from __future__ import annotations

import json

import httplib2
import pytest
from fakes.drive import CLIENT_ID, CLIENT_SECRET, SCOPE_READONLY
from googleapiclient.errors import HttpError


def _svc(client):
    return client._service()


def test_error_envelope_has_googles_shape(fake):
    resp, body = httplib2.Http().request(fake.api_url + "changes/startPageToken",
                                         headers={"Authorization": "Bearer nope"})
    assert resp.status == 401 and "invalid_token" in resp["www-authenticate"]
    err = json.loads(body)["error"]
    assert (err["code"], err["status"]) == (401, "UNAUTHENTICATED")
    assert err["errors"][0] == {"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                                "location": "Authorization", "locationType": "header"}


def test_fields_are_validated_and_applied(fake, client):
    fid = fake.add_file("a.jpg", description="d")
    default = _svc(client).files().get(fileId=fid).execute()
    assert set(default) == {"kind", "id", "name", "mimeType"}  # Drive's default field set
    picked = _svc(client).files().get(fileId=fid, fields="id,size,shortcutDetails(targetId)").execute()
    assert set(picked) == {"id", "size"} and isinstance(picked["size"], str)
    with pytest.raises(HttpError) as err:
        _svc(client).files().get(fileId=fid, fields="id,nonsense").execute()
    assert err.value.resp.status == 400 and "nonsense" in err.value.reason


def test_query_language_subset_and_refusals(fake, client):
    p = fake.add_folder("P")
    fake.add_file("it's.jpg", p)
    fake.add_native("doc", p)
    q = f"'{p}' in parents and trashed = false and not mimeType = 'application/vnd.google-apps.document'"
    got = _svc(client).files().list(q=q).execute()
    assert [f["name"] for f in got["files"]] == ["it's.jpg"] and got["kind"] == "drive#fileList"
    named = _svc(client).files().list(q="name contains 'it\\'s'").execute()
    assert [f["name"] for f in named["files"]] == ["it's.jpg"]
    for bad in ("modifiedTime > yesterday", "'x' in owners", "trashed = maybe", "(trashed = false"):
        with pytest.raises(HttpError) as err:
            _svc(client).files().list(q=bad).execute()
        assert err.value.resp.status == 400


def test_shared_drive_items_need_both_all_drives_flags(fake, client):
    team = fake.add_shared_drive("Team")
    fid = fake.add_file("t.jpg", fake.add_folder("F", team))
    with pytest.raises(HttpError) as err:
        _svc(client).files().get(fileId=fid).execute()
    assert err.value.resp.status == 404
    assert _svc(client).files().get(fileId=fid, supportsAllDrives=True).execute()["id"] == fid
    with pytest.raises(HttpError):
        _svc(client).files().list(includeItemsFromAllDrives=True).execute()
    token = client.start_page_token()
    fake.add_file("u.jpg", fake.add_folder("G", team))
    plain = _svc(client).changes().list(pageToken=token).execute()
    assert plain["changes"] == [] and plain["newStartPageToken"]


def test_change_pages_and_page_size_limits(fake, client):
    token = client.start_page_token()
    for k in range(3):
        fake.add_file(f"{k}.jpg")
    first = _svc(client).changes().list(pageToken=token, pageSize=2).execute()
    assert len(first["changes"]) == 2 and "nextPageToken" in first and "newStartPageToken" not in first
    c = first["changes"][0]
    assert c["kind"] == "drive#change" and c["changeType"] == "file" and c["removed"] is False
    assert set(c["file"]) == {"kind", "id", "name", "mimeType"}
    last = _svc(client).changes().list(pageToken=first["nextPageToken"], pageSize=2).execute()
    assert len(last["changes"]) == 1 and "newStartPageToken" in last and "nextPageToken" not in last
    with pytest.raises(HttpError) as err:
        _svc(client).changes().list(pageToken=token, pageSize=1001).execute()
    assert err.value.resp.status == 400


def test_oauth_code_flow_with_pkce_through_google_auth_oauthlib(fake, monkeypatch):
    from google_auth_oauthlib.flow import Flow

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    config = {"web": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "auth_uri": fake.auth_uri,
                      "token_uri": fake.token_uri, "redirect_uris": ["https://poster.example/cb"]}}

    def flow(verifier):
        return Flow.from_client_config(config, scopes=[SCOPE_READONLY], redirect_uri="https://poster.example/cb",
                                       code_verifier=verifier, autogenerate_code_verifier=False)

    url, _ = flow("v" * 64).authorization_url(prompt="consent")
    code, _ = fake.approve(url)
    wrong = flow("w" * 64)
    with pytest.raises(Exception, match="invalid_grant"):
        wrong.fetch_token(code=code)
    url, _ = flow("v" * 64).authorization_url(prompt="consent")
    code, _ = fake.approve(url)
    good = flow("v" * 64)
    good.fetch_token(code=code)
    assert good.credentials.refresh_token and good.credentials.token.startswith("ya29.")
    with pytest.raises(Exception, match="invalid_grant"):  # codes are single-use
        flow("v" * 64).fetch_token(code=code)
    about = httplib2.Http().request(fake.api_url + "about?fields=user(emailAddress)",
                                    headers={"Authorization": f"Bearer {good.credentials.token}"})
    assert json.loads(about[1]) == {"user": {"emailAddress": "ann@gmail.example"}}
