"""The watch form's Drive folder picker through the ASGI app, on both databases, against the fake Drive
(through the real google-api-python-client): browse, open, back up, search, choose; reconnect and
unreachable messages."""

from __future__ import annotations

import re

from drive import test_wired
from sqlmodel import select

from aiposter.core.models import Connection, Watch
from aiposter.db import session_scope

from .conftest import csrf_of, sign_in

PASSWORD = test_wired.PASSWORD
drive, env = test_wired.drive, test_wired.env  # fixtures: the Drive fake, and an install connected to it


def _buttons(html: str, label: str) -> dict[str, str]:
    """{folder name: hx-get URL} of the picker's Open buttons."""
    found = re.findall(r'hx-get="([^"]+)" hx-target="#picker-list">Open<span class="sr-only"> ([^<]+)</span>', html)
    return {name: url.replace("&amp;", "&") for url, name in found}


def test_browse_open_back_search_and_create_a_watch_with_the_chosen_folder(env, drive):
    cid = env.connect()
    shop = drive.add_folder("Shop")
    windows = drive.add_folder("Windows", shop)
    drive.add_folder("Old", shop)
    team = drive.add_shared_drive("Team")
    client = env.client
    sign_in(client, "ann@example.com", PASSWORD)
    form = client.get("/watches/new").text
    assert f'<option value="{cid}" selected>' in form  # the only Drive account is preselected
    assert 'hx-get="/watches/folders"' in form and 'id="picker-q"' in form

    top = client.get(f"/watches/folders?source_connection_id={cid}", headers={"HX-Request": "true"})
    assert top.status_code == 200 and "My Drive and shared drives" in top.text
    assert "Shared drive: Team" in top.text and f'data-pick-folder="{team}"' in top.text
    opened = client.get(_buttons(top.text, "Open")["Shop"]).text
    assert "In Shop" in opened and f'data-pick-folder="{windows}"' in opened and "Old" in opened
    assert "Back up to the top" in opened
    deeper = client.get(_buttons(opened, "Open")["Windows"]).text
    assert "In Shop › Windows" in deeper and "No subfolders here" in deeper and "Back up to Shop" in deeper
    up = re.search(r'hx-get="([^"]+)" hx-target="#picker-list">Back up to Shop', deeper).group(1)
    assert f'data-pick-folder="{windows}"' in client.get(up.replace("&amp;", "&")).text

    found = client.get(f"/watches/folders?source_connection_id={cid}&q=wind").text
    assert "Folders named like “wind”" in found and f'data-pick-folder="{windows}"' in found and "Old" not in found
    assert "No folder name contains" in client.get(f"/watches/folders?source_connection_id={cid}&q=zzz").text

    r = client.post("/watches/new", data={"csrf": csrf_of(form), "source": "google_drive", "folder": windows,
                                          "source_connection_id": str(cid), "targets": "outbox",
                                          "interval_minutes": "5", "approval": "auto"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    with session_scope(env.app.engine) as s:
        w = s.exec(select(Watch)).one()
        assert (w.folder, w.folder_name, w.name, w.baseline_done) == (windows, "Windows", "Windows", True)
    edit = client.get(f"/watches/{w.id}/edit").text
    assert "Chosen: <strong>Windows</strong>" in edit


def test_reconnect_and_unreachable_and_someone_elses_connection(env, drive):
    cid = env.connect()
    client = env.client
    sign_in(client, "ann@example.com", PASSWORD)
    assert "Choose a Drive account first" in client.get("/watches/folders?source_connection_id=").text
    assert "not connected to your account" in client.get("/watches/folders?source_connection_id=99999").text

    drive.server.shutdown()  # Drive does not answer
    drive.server.server_close()
    r = client.get(f"/watches/folders?source_connection_id={cid}")
    assert r.status_code == 200 and 'role="alert"' in r.text and "Google Drive did not answer" in r.text
    assert "Try again" in r.text


def test_revoked_access_asks_to_reconnect(env, drive):
    cid = env.connect()
    client = env.client
    sign_in(client, "ann@example.com", PASSWORD)
    drive.revoke_refresh_tokens()
    r = client.get(f"/watches/folders?source_connection_id={cid}")
    assert r.status_code == 200 and "needs to be reconnected" in r.text and 'href="/drive"' in r.text
    with session_scope(env.app.engine) as s:
        assert s.get(Connection, cid).status == "needs_reauth"  # the Drive page says so too
