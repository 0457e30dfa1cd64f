"""The Page/Instagram picker, token import checks and Page-token health (debug_token) against the
fake Graph and Threads servers."""

from __future__ import annotations

import pytest
from fakes.meta import APP_ID, APP_SECRET

from aiposter.core.errors import PublishError
from aiposter.publishers.meta.accounts import (
    check_instagram_token,
    check_page_token,
    check_threads_token,
    list_pages,
)
from aiposter.publishers.meta.tokens import debug_token, page_token_problem


def test_list_pages_follows_paging_and_shows_linked_instagram_accounts(graph, graph_client):
    graph.add_page("p1", "Bakery", ig_id="ig1", ig_username="bakery.ig")
    graph.add_page("p2", "Garage", tasks=("ANALYZE",))
    for i in range(30):
        graph.add_page(f"x{i}", f"Shop {i}")
    user = graph.add_user("u1", ["p1", "p2"] + [f"x{i}" for i in range(30)])
    pages = {p.page_id: p for p in list_pages(graph_client(user))}
    assert len(pages) == 32 and len(graph.calls("accounts")) == 2
    assert (pages["p1"].instagram_id, pages["p1"].instagram_username) == ("ig1", "bakery.ig")
    assert pages["p1"].access_token == graph.pages["p1"]["token"] and pages["p1"].can_publish
    assert pages["p2"].instagram_id is None and not pages["p2"].can_publish  # may only analyse


def test_importing_tokens_checks_them_against_the_api(graph, graph_client, threads_fake, threads_client):
    page_token = graph.add_page("p1", "Bakery", ig_id="ig1", ig_username="bakery.ig")
    fb = check_page_token(graph_client(page_token))
    assert (fb.platform, fb.account_id, fb.account_name) == ("facebook", "p1", "Bakery")
    assert fb.secrets == {"access_token": page_token}
    ig = check_instagram_token(graph_client(page_token))
    assert (ig.account_id, ig.account_name, ig.secrets["page_id"]) == ("ig1", "bakery.ig", "p1")
    th_token = threads_fake.add_user("777", "ann.threads")
    th = check_threads_token(threads_client(th_token))
    assert (th.account_id, th.account_name, th.secrets["user_id"]) == ("777", "ann.threads", "777")


def test_import_refuses_a_page_without_instagram_and_a_revoked_token(graph, graph_client, threads_fake,
                                                                     threads_client):
    token = graph.add_page("p2", "Garage")
    with pytest.raises(PublishError) as exc:
        check_instagram_token(graph_client(token))
    assert "no Instagram professional account" in exc.value.message
    th_token = threads_fake.add_user("777", "ann.threads", scopes=("threads_basic",))
    threads_fake.revoke(th_token, 460)
    with pytest.raises(PublishError) as exc:
        check_threads_token(threads_client(th_token))
    assert exc.value.code == "auth"


def test_debug_token_tells_a_healthy_page_token_from_a_revoked_one(graph):
    token = graph.add_page("p1", "Bakery")
    info = debug_token(graph.url, "v21.0", APP_ID, APP_SECRET, token)
    assert info.is_valid and info.type == "PAGE" and info.profile_id == "p1" and info.expires_at is None
    assert page_token_problem(info, page_id="p1", app_id=APP_ID) is None
    assert "not p9" in page_token_problem(info, page_id="p9")
    graph.revoke(token, 460)
    revoked = debug_token(graph.url, "v21.0", APP_ID, APP_SECRET, token)
    assert not revoked.is_valid and "reconnect" in page_token_problem(revoked)


def test_debug_token_flags_missing_permissions_and_a_user_token(graph):
    narrow = graph.add_page("p1", "Bakery", scopes=("pages_show_list",))
    problem = page_token_problem(debug_token(graph.url, "v21.0", APP_ID, APP_SECRET, narrow))
    assert "pages_manage_posts" in problem and "reconnect" in problem
    user = graph.add_user("u1", ["p1"])
    assert "USER token" in page_token_problem(debug_token(graph.url, "v21.0", APP_ID, APP_SECRET, user))
