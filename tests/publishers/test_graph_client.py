"""The Graph client against the fake Graph server: signing, versions, every error class, usage
headers, and which transport failures leave a publish's outcome unknown."""

from __future__ import annotations

import json
import socket

import pytest
from fakes.meta import commit_then_drop, commit_then_hang, drop, graph_error, hang, http_status

from aiposter.core.errors import PublishError
from aiposter.publishers.meta.graph import GraphClient, Timeouts, Usage, appsecret_proof


def test_every_call_carries_a_valid_appsecret_proof(graph, graph_client):
    token = graph.add_page("p1", "Bakery")
    assert graph_client(token).get("p1", {"fields": "id,name"}) == {"id": "p1", "name": "Bakery"}
    sent = graph.requests[-1].params
    assert sent["appsecret_proof"] == appsecret_proof(token, "meta-secret")
    with pytest.raises(PublishError) as wrong:
        graph_client(token, secret="not-the-secret").get("p1")
    assert wrong.value.code == "config" and "appsecret_proof" in wrong.value.message
    with pytest.raises(PublishError) as missing:
        graph_client(token, secret=None).get("p1")
    assert missing.value.code == "config"


def test_a_retired_api_version_is_an_install_wide_config_error(graph):
    token = graph.add_page("p1", "Bakery")
    with pytest.raises(PublishError) as exc:
        GraphClient(graph.url, "v12.0", token, app_secret="meta-secret").get("p1")
    assert exc.value.code == "config" and "v12.0" in exc.value.message


BUC_FULL = {"X-Business-Use-Case-Usage": json.dumps(
    {"p1": [{"type": "pages", "call_count": 100, "total_cputime": 30, "total_time": 30,
             "estimated_time_to_regain_access": 7}]})}


@pytest.mark.parametrize("fault, code, permanent, retry_after", [
    (graph_error(4, message="(#4) Application request limit reached"), "rate_limited", False, 300),
    (graph_error(17, message="(#17) User request limit reached"), "rate_limited", False, 300),
    (graph_error(32, message="(#32) Page request limit reached"), "rate_limited", False, 300),
    (graph_error(613, 1996, "(#613) Calls to this api have exceeded the rate limit."), "rate_limited", False, 300),
    (graph_error(80001, message="There have been too many calls to this Page account.", headers=BUC_FULL),
     "rate_limited", False, 420),
    (graph_error(4, 2207051, "Action is blocked"), "rate_limited", False, 3600),
    (graph_error(9, 2207042, "Maximum number of posts reached"), "quota", False, 3600),
    (graph_error(190, 463, "Error validating access token: Session has expired"), "auth", True, None),
    (graph_error(190, 460, "The session has been invalidated"), "auth", True, None),
    (graph_error(102, message="Session key invalid"), "auth", True, None),
    (graph_error(10, message="(#10) Application does not have permission"), "auth", True, None),
    (graph_error(200, message="(#200) Requires pages_manage_posts permission", status=403), "auth", True, None),
    (graph_error(25, 2207050, "The user is inactive"), "auth", True, None),
    (graph_error(9004, 2207052, "The media could not be fetched from this uri"), "media", True, None),
    (graph_error(36003, 2207009, "The submitted image with aspect ratio cannot be published"), "media", True, None),
    (graph_error(36001, 2207005, "The image format is not supported."), "media", True, None),
    (graph_error(352, 2207026, "The video format is not supported."), "media", True, None),
    (graph_error(324, message="(#324) Requires upload file"), "media", True, None),
    (graph_error(36004, 2207010, "The caption is too long"), "caption", True, None),
    (graph_error(1, message="An unknown error occurred", status=500), "server_error", False, None),
    (graph_error(2, message="Service temporarily unavailable", transient=True), "server_error", False, None),
    (graph_error(-2, 2207003, "Timeout downloading media"), "server_error", False, None),
    (http_status(502), "server_error", False, None),
    (http_status(503, "<html>overloaded</html>"), "overloaded", False, None),
    (graph_error(100, message="(#100) Invalid parameter"), "bad_request", True, None),
    (graph_error(368, message="(#368) The action attempted has been deemed abusive"), "rate_limited", False, 3600),
])
def test_graph_errors_are_classified_by_code_and_subcode(graph, graph_client, fault, code, permanent, retry_after):
    token = graph.add_page("p1", "Bakery")
    graph.fail("object", fault)
    with pytest.raises(PublishError) as exc:
        graph_client(token).get("p1")
    err = exc.value
    assert (err.code, err.permanent, err.retry_after) == (code, permanent, retry_after)
    assert not err.ambiguous
    if fault.kind == "error":
        assert fault.message[:30] in err.message  # the platform's own words reach the user


def test_usage_near_the_budget_stops_the_next_call_before_it_is_sent(graph, graph_client):
    token = graph.add_page("p1", "Bakery")
    client = graph_client(token)
    graph.buc_usage = {"call_count": 96, "total_cputime": 10, "total_time": 10, "estimated_time_to_regain_access": 0}
    assert client.get("p1")["id"] == "p1"  # the answer itself is fine
    sent = len(graph.requests)
    with pytest.raises(PublishError) as exc:
        client.get("p1")
    assert exc.value.code == "rate_limited" and exc.value.retry_after > 0
    assert "96%" in exc.value.message and "X-Business-Use-Case-Usage" in exc.value.message
    assert len(graph.requests) == sent  # nothing went out
    assert client.backoff_seconds() is not None


def test_app_usage_below_the_threshold_does_not_block(graph, graph_client):
    token = graph.add_page("p1", "Bakery")
    client = graph_client(token)
    graph.app_usage = {"call_count": 60, "total_cputime": 20, "total_time": 20}
    client.get("p1")
    client.get("p1")
    assert client.usage.percent == 60 and client.backoff_seconds() is None


def test_usage_headers_parse_the_busiest_budget():
    usage = Usage.from_headers({
        "x-app-usage": json.dumps({"call_count": 12, "total_time": 40, "total_cputime": 5}),
        "x-business-use-case-usage": json.dumps({"1": [{"type": "pages", "call_count": 80, "total_time": 3,
                                                        "total_cputime": 2, "estimated_time_to_regain_access": 0}],
                                                 "2": [{"type": "instagram", "call_count": 99, "total_time": 1,
                                                        "total_cputime": 1, "estimated_time_to_regain_access": 2}]})})
    assert (usage.percent, usage.regain_seconds) == (99, 120)
    assert usage.backoff_seconds() == 120
    assert Usage.from_headers({"x-app-usage": "not json"}).backoff_seconds() is None


def test_a_publish_that_commits_then_drops_its_connection_is_ambiguous(graph, graph_client, photo):
    token = graph.add_page("p1", "Bakery")
    graph.fail("photos", commit_then_drop())
    with pytest.raises(PublishError) as exc:
        graph_client(token).post("p1/photos", {"message": "hi"}, irreversible=True,
                                 files={"source": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    assert exc.value.ambiguous and exc.value.code == "connection"
    assert len(graph.page_posts("p1")) == 1  # it did commit


def test_a_timeout_after_sending_is_ambiguous_only_for_irreversible_calls(graph, graph_client):
    token = graph.add_page("p1", "Bakery")
    client = graph_client(token, timeouts=Timeouts(connect=1, read=0.3))
    graph.fail("object", hang(3))
    with pytest.raises(PublishError) as read:
        client.get("p1")
    assert (read.value.code, read.value.ambiguous, read.value.permanent) == ("timeout", False, False)
    graph.fail("photos", commit_then_hang(3))
    with pytest.raises(PublishError) as post:
        client.post("p1/photos", {"message": "x"}, irreversible=True,
                    files={"source": ("p.jpg", b"\xff\xd8\xff", "image/jpeg")})
    assert post.value.ambiguous and post.value.code == "timeout"
    graph.fail("object", drop())
    with pytest.raises(PublishError) as dropped:
        client.get("p1")
    assert dropped.value.code == "connection" and not dropped.value.ambiguous


def test_nothing_listening_is_a_connection_error_never_ambiguous():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GraphClient(f"http://127.0.0.1:{port}", "v21.0", "t", app_secret="s")
    with pytest.raises(PublishError) as exc:
        client.post("p1/photos", {"message": "x"}, irreversible=True)
    assert exc.value.code == "connection" and not exc.value.ambiguous and f"127.0.0.1:{port}" in exc.value.message
