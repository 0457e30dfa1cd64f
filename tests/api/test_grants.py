"""Picking which Facebook Pages or Instagram accounts to use when one Facebook Login granted several:
the choice waits, encrypted and owned, expires, and connects exactly what the user picked."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa

from aiposter.core.daemon import purge_security_records
from aiposter.core.models import Connection, MetaGrant, utcnow
from aiposter.core.pipeline import Context
from aiposter.crypto import grant_context
from aiposter.db import session_scope
from aiposter.services import users

from .fakes import BAKERY, FLORIST, GARAGE
from .test_connections import start, stored


def connect(client, person, fake_oauth, provider="facebook", via="callback"):
    """Start, consent on the fake, finish; the API's answer."""
    code, state = fake_oauth.approve(start(client, person, provider)["authorize_url"])
    if via == "callback":
        r = client.get(f"/api/v1/connections/{provider}/callback", params={"code": code, "state": state})
    else:
        r = client.post(f"/api/v1/connections/{provider}/finish", headers=person.headers,
                        json={"state": state, "code": code})
    assert r.status_code == 200, r.text
    return r.json()


def grant_rows(application, user_id=None):
    with session_scope(application.engine) as s:
        q = sa.select(MetaGrant)
        if user_id is not None:
            q = q.where(MetaGrant.user_id == user_id)
        rows = list(s.exec(q).scalars())
        s.expunge_all()
        return rows


def select(client, person, grant_id, account_ids):
    return client.post(f"/api/v1/connections/grants/{grant_id}/select", headers=person.headers,
                       json={"account_ids": account_ids})


def test_several_pages_wait_for_the_choice_and_exactly_the_chosen_connect(client, application, ann, fake_oauth,
                                                                          meta_pages):
    meta_pages(BAKERY, GARAGE, FLORIST)
    pending = connect(client, ann, fake_oauth)["pending"]
    assert stored(application, ann.id) == {}  # nothing connected before the choice
    assert [(c["account_id"], c["account_name"], c["connected"]) for c in pending["candidates"]] == [
        ("p1", "Bakery", False), ("p2", "Garage", False), ("p3", "Florist", False)]
    [row] = grant_rows(application, ann.id)
    assert row.id == pending["id"] and row.provider == "facebook"
    assert "page-" not in row.candidates  # the Page tokens are ciphertext, bound to the row
    tokens = [c["credentials"]["access_token"]
              for c in json.loads(application.keyring.decrypt(row.candidates, grant_context(row.id)))]
    assert all(t.startswith("page-") for t in tokens) and len(tokens) == 3
    shown = client.get(f"/api/v1/connections/grants/{row.id}", headers=ann.headers)
    assert shown.status_code == 200 and shown.json() == pending
    assert not any(t in shown.text for t in tokens) and "access_token" not in shown.text

    r = select(client, ann, row.id, ["p1", "p3"])
    assert r.status_code == 200, r.text
    assert {c["account_id"]: c["account_name"] for c in r.json()} == {"p1": "Bakery", "p3": "Florist"}
    conns = stored(application, ann.id)
    assert set(conns) == {"p1", "p3"}
    for account, (c, creds) in conns.items():
        assert creds["access_token"] == tokens[int(account[1]) - 1] and creds["access_token"] not in c.credentials
    assert grant_rows(application) == []  # the grant and the Garage's token are gone
    assert client.get(f"/api/v1/connections/grants/{row.id}", headers=ann.headers).status_code == 404
    assert select(client, ann, row.id, ["p2"]).status_code == 404  # and cannot be used again


def test_connected_pages_are_marked_and_choosing_one_again_refreshes_it(client, application, ann, fake_oauth,
                                                                        meta_pages):
    meta_pages(BAKERY, GARAGE)
    first = connect(client, ann, fake_oauth, via="finish")["pending"]  # /finish answers like the callback
    [bakery] = select(client, ann, first["id"], ["p1"]).json()
    old_token = stored(application, ann.id)["p1"][1]["access_token"]
    with session_scope(application.engine) as s:
        s.execute(sa.update(Connection).values(status="needs_reauth", last_error="token revoked"))
    again = connect(client, ann, fake_oauth)["pending"]
    marks = {c["account_id"]: (c["connected"], c["connection_id"], c["connection_status"])
             for c in again["candidates"]}
    assert marks == {"p1": (True, bakery["id"], "needs_reauth"), "p2": (False, None, None)}
    [c] = select(client, ann, again["id"], ["p1"]).json()
    assert (c["id"], c["status"], c["last_error"]) == (bakery["id"], "active", None)
    assert stored(application, ann.id)["p1"][1]["access_token"] != old_token
    assert len(stored(application, ann.id)) == 1


def test_instagram_accounts_are_picked_the_same_way(client, application, ann, fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE, FLORIST)
    pending = connect(client, ann, fake_oauth, provider="instagram")["pending"]
    assert [(c["account_id"], c["account_name"], c["page_id"]) for c in pending["candidates"]] == [
        ("ig1", "bakery.ig", "p1"), ("ig3", "florist.ig", "p3")]  # the Garage has no Instagram account
    [c] = select(client, ann, pending["id"], ["ig3"]).json()
    assert (c["provider"], c["account_id"]) == ("instagram", "ig3")
    assert stored(application, ann.id)["ig3"][1]["page_id"] == "p3"


def test_an_empty_or_unknown_choice_names_the_field_and_keeps_the_grant(client, application, ann, fake_oauth,
                                                                        meta_pages):
    meta_pages(BAKERY, GARAGE)
    gid = connect(client, ann, fake_oauth)["pending"]["id"]
    r = select(client, ann, gid, [])
    assert r.status_code == 422 and r.json()["error"]["field"] == "account_ids"
    r = select(client, ann, gid, ["p1", "p9"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "account_ids" and "p9" in r.json()["error"]["message"]
    assert stored(application, ann.id) == {} and len(grant_rows(application, ann.id)) == 1


def test_another_users_grant_is_404(client, application, ann, bob, fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE)
    gid = connect(client, ann, fake_oauth)["pending"]["id"]
    assert client.get(f"/api/v1/connections/grants/{gid}", headers=bob.headers).status_code == 404
    assert select(client, bob, gid, ["p1"]).status_code == 404
    assert client.delete(f"/api/v1/connections/grants/{gid}", headers=bob.headers).status_code == 404
    assert stored(application, bob.id) == {} and len(grant_rows(application, ann.id)) == 1


def test_an_expired_grant_is_gone_and_swept_by_housekeeping(client, application, ann, fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE)
    gid = connect(client, ann, fake_oauth)["pending"]["id"]
    with session_scope(application.engine) as s:
        s.execute(sa.update(MetaGrant).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.get(f"/api/v1/connections/grants/{gid}", headers=ann.headers)
    assert r.status_code == 410 and r.json()["error"]["code"] == "gone"
    assert "expired" in r.json()["error"]["message"] and "connect again" in r.json()["error"]["message"]
    assert select(client, ann, gid, ["p1"]).status_code == 410 and stored(application, ann.id) == {}
    purge_security_records(Context(application.cfg, application.engine, owner="t", keyring=application.keyring))
    assert grant_rows(application) == []
    assert client.get(f"/api/v1/connections/grants/{gid}", headers=ann.headers).status_code == 404


def test_discarding_connects_nothing_and_a_new_login_replaces_the_pending_choice(client, application, ann,
                                                                                 fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE)
    first = connect(client, ann, fake_oauth)["pending"]["id"]
    second = connect(client, ann, fake_oauth)["pending"]["id"]
    assert [g.id for g in grant_rows(application, ann.id)] == [second]
    assert client.get(f"/api/v1/connections/grants/{first}", headers=ann.headers).status_code == 404
    r = client.delete(f"/api/v1/connections/grants/{second}", headers=ann.headers)
    assert r.status_code == 200 and r.json()["ok"]
    assert grant_rows(application) == [] and stored(application, ann.id) == {}


def test_deleting_the_account_deletes_its_pending_grants(client, application, ann, bob, fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE)
    connect(client, ann, fake_oauth)
    connect(client, bob, fake_oauth)
    with session_scope(application.engine) as s:
        users.delete_user(s, application.cfg, ann.user(application.engine))
    assert [g.user_id for g in grant_rows(application)] == [bob.id]


def test_one_page_connects_directly(client, application, ann, fake_oauth, meta_pages):
    meta_pages(GARAGE)
    [c] = connect(client, ann, fake_oauth)
    assert (c["account_id"], c["status"]) == ("p2", "active")
    assert grant_rows(application) == []


def test_pages_where_the_user_cannot_create_content_are_not_offered(client, application, ann, fake_oauth,
                                                                     meta_pages):
    """Meta lists every Page where the user has any task; posting needs CREATE_CONTENT (or MANAGE)."""
    analyst = {**FLORIST, "tasks": ["ANALYZE"]}
    meta_pages(BAKERY, GARAGE, analyst)
    pending = connect(client, ann, fake_oauth)["pending"]
    assert [c["account_id"] for c in pending["candidates"]] == ["p1", "p2"]
    assert select(client, ann, pending["id"], ["p3"]).status_code == 422  # not a candidate
    # With one publishable Page left, it connects directly; the Instagram account of the other is not offered.
    meta_pages(GARAGE, analyst)
    [c] = connect(client, ann, fake_oauth)
    assert c["account_id"] == "p2"


def test_a_login_that_can_create_content_on_no_page_says_so(client, application, ann, fake_oauth, meta_pages):
    meta_pages({**BAKERY, "tasks": ["ANALYZE", "ADVERTISE"]})
    code, state = fake_oauth.approve(start(client, ann, "facebook")["authorize_url"])
    r = client.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and r.json()["error"]["code"] == "oauth_failed"
    message = r.json()["error"]["message"]
    assert "Bakery" in message and "Create content" in message
    assert stored(application, ann.id) == {} and grant_rows(application) == []


def test_the_openapi_document_describes_both_answers_and_the_grant_routes(client):
    doc = client.get("/openapi.json").json()
    callback = doc["paths"]["/api/v1/connections/{provider}/callback"]["get"]["responses"]["200"]
    assert "PendingOut" in json.dumps(callback) and "ConnectionOut" in json.dumps(callback)
    grant = doc["paths"]["/api/v1/connections/grants/{grant_id}"]
    assert set(grant) == {"get", "delete"} and "410" in grant["get"]["responses"]
    select_op = doc["paths"]["/api/v1/connections/grants/{grant_id}/select"]["post"]
    assert "GrantSelect" in json.dumps(select_op["requestBody"])
    assert doc["components"]["schemas"]["GrantSelect"]["properties"]["account_ids"]["minItems"] == 1
