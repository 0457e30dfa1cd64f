"""The 'Choose which Pages to use' page through the ASGI app: the browser's Facebook connect lands there
when several Pages were granted; the form keeps the choice on an error and connects exactly what was ticked."""

from __future__ import annotations

import re

from api.fakes import BAKERY, FLORIST, GARAGE

from .conftest import csrf_of, sign_in


def browser_connects_facebook(client, fake_oauth):
    """Press 'Connect Facebook Page' on Social accounts, consent on the fake, follow the callback."""
    social = client.get("/social").text
    r = client.post("/connections/facebook/start", data={"csrf": csrf_of(social)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    code, state = fake_oauth.approve(r.headers["location"])
    return client.get("/api/v1/connections/facebook/callback", params={"code": code, "state": state},
                      headers={"Accept": "text/html"}, follow_redirects=False)


def boxes(html: str) -> dict[str, bool]:
    """account id -> ticked, for each checkbox of the form."""
    return {m.group(2): bool(m.group(3)) for m in
            re.finditer(r'<input type="checkbox" name="(account_ids)" value="([^"]+)" ?(checked)?', html)}


def test_several_pages_are_chosen_on_a_page_then_shown_on_social_accounts(client, ann, fake_oauth, meta_pages):
    meta_pages(BAKERY)
    sign_in(client, ann.email)
    r = browser_connects_facebook(client, fake_oauth)  # one Page: connected at once, as before
    assert r.status_code == 303 and r.headers["location"] == "/social?done=Connected%3A+Bakery."

    meta_pages(BAKERY, GARAGE, FLORIST)
    r = browser_connects_facebook(client, fake_oauth)
    assert r.status_code == 303 and r.headers["location"].startswith("/connections/grants/")
    url = r.headers["location"]
    page = client.get(url)
    assert page.status_code == 200 and "Choose which Pages to use" in page.text
    assert "<legend>" in page.text and page.headers["cache-control"] == "no-store"
    assert boxes(page.text) == {"p1": True, "p2": False, "p3": False}  # the connected one ticked
    assert page.text.count(">already connected<") == 1 and "page-" not in page.text  # no token on the page
    csrf = csrf_of(page.text)

    assert client.post(url, data={"account_ids": ["p3"]}).status_code == 403  # no CSRF token: refused
    r = client.post(url, data={"csrf": csrf})  # nothing ticked
    assert r.status_code == 422 and 'id="account_ids-error"' in r.text and "choose at least one" in r.text
    assert boxes(r.text) == {"p1": False, "p2": False, "p3": False}  # the user's (empty) choice is kept

    r = client.post(url, data={"csrf": csrf, "account_ids": ["p1", "p3"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/social?")
    social = client.get(r.headers["location"]).text
    assert "Connected: Bakery, Florist." in social and "Florist" in social.split("<table")[1]
    assert "Garage" not in social
    assert client.get(url).status_code == 404  # the choice is used up


def test_connecting_none_and_another_users_choice(client, ann, bob, fake_oauth, meta_pages):
    meta_pages(BAKERY, GARAGE)
    sign_in(client, ann.email)
    url = browser_connects_facebook(client, fake_oauth).headers["location"]
    csrf = csrf_of(client.get(url).text)
    with client.__class__(client.app) as other:
        sign_in(other, bob.email)
        r = other.get(url)
        assert r.status_code == 404 and "<main" in r.text
        r = other.post(url, data={"csrf": csrf_of(other.get("/social").text), "account_ids": ["p1"]})
        assert r.status_code == 404
    r = client.post(f"{url}/discard", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    social = client.get(r.headers["location"]).text
    assert "Nothing was connected" in social and "No social account yet" in social


def test_instagram_is_connected_from_social_accounts_and_reconnected_as_instagram(client, ann, fake_oauth,
                                                                                  meta_pages):
    meta_pages(BAKERY, GARAGE)  # only the Bakery Page has a linked Instagram professional account
    sign_in(client, ann.email)
    social = client.get("/social").text
    assert 'action="/connections/instagram/start"' in social and "Connect Instagram" in social
    r = client.post("/connections/instagram/start", data={"csrf": csrf_of(social)}, follow_redirects=False)
    assert r.status_code == 303
    code, state = fake_oauth.approve(r.headers["location"])
    r = client.get("/api/v1/connections/instagram/callback", params={"code": code, "state": state},
                   headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/social?done=Connected%3A+bakery.ig."
    [c] = client.get("/api/v1/connections", headers=ann.headers).json()
    assert (c["provider"], c["account_id"]) == ("instagram", "ig1")
    # its Reconnect button starts the Instagram flow again (a Facebook one would not renew this connection)
    page = client.get("/social").text
    assert page.count('action="/connections/instagram/start"') == 2
