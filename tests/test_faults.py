"""The shared HTTP fault classifier on each provider's real error shapes, and on the transport exceptions
of the HTTP libraries the adapters use, raised for real against closed or silent loopback ports."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httplib2
import httpx
import pytest
import requests

from aiposter.core import faults


def test_retry_after_variants():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert faults.retry_after({"Retry-After": "30"}) == 30.0
    assert faults.retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert faults.retry_after({"retry-after": date}, now=now) == 90.0
    usage = '{"123": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 5}]}'
    assert faults.retry_after({"x-business-use-case-usage": usage}) == 300.0
    assert faults.retry_after({"retry-after": "soon"}) is None and faults.retry_after(None) is None


def test_google_retry_info_and_daily_quota():
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3600s"}]}}
    fault = faults.classify_http(429, {}, body, who="gemini")
    assert (fault.kind, fault.code, fault.retry_after) == (faults.QUOTA, "quota", 3600.0)
    per_minute = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31.5s"}]}}
    assert faults.classify_http(429, None, per_minute).retry_after == 31.5


@pytest.mark.parametrize(("status", "body", "kind", "code"), [
    (400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key expired.", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}, "auth", "auth"),
    (429, {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                     "code": "insufficient_quota"}}, "quota", "quota"),
    (400, {"type": "error", "error": {"type": "invalid_request_error",
                                      "message": "Your credit balance is too low to access the Anthropic API."}},
     "quota", "quota"),
    (404, {"error": {"message": "The model `x` does not exist", "type": "invalid_request_error",
                     "code": "model_not_found"}}, "config", "config"),
    (403, {"error": {"code": 403, "message": "User Rate Limit Exceeded",
                     "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}]}},
     "rate_limited", "rate_limited"),
    (403, {"error": {"code": 403, "message": "Only files with binary content can be downloaded",
                     "errors": [{"reason": "fileNotDownloadable"}]}}, "permanent", "forbidden"),
    (403, {"error": {"code": 403, "message": "Drive API has not been used in project 1",
                     "errors": [{"reason": "accessNotConfigured"}]}}, "config", "config"),
    (404, {"error": {"code": 404, "message": "File not found: abc.", "errors": [{"reason": "notFound"}]}},
     "permanent", "not_found"),
    (400, {"error": {"message": "Error validating access token", "type": "OAuthException", "code": 190,
                     "error_subcode": 463}}, "auth", "auth"),
    (400, {"error": {"message": "Application request limit reached", "type": "OAuthException", "code": 4}},
     "rate_limited", "rate_limited"),
    (400, {"error": {"message": "publishing limit", "code": 9, "error_subcode": 2207042}}, "quota", "quota"),
    (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, "auth", "auth"),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "transient",
     "overloaded"),
    (503, "<html><body>Service Unavailable</body></html>", "transient", "server_error"),
    (504, None, "transient", "timeout"),
    (400, {"error": {"message": "Your request was rejected by our safety system",
                     "code": "content_policy_violation"}}, "permanent", "refused"),
    (422, {"detail": "bad"}, "permanent", "bad_request"),
])
def test_error_shapes(status, body, kind, code):
    fault = faults.classify_http(status, {}, body, who="x")
    assert (fault.kind, fault.code) == (kind, code)
    assert fault.message.startswith(f"x: HTTP {status}") and "<" not in fault.message
    assert fault.permanent == (kind not in ("transient", "rate_limited"))


def test_a_404_means_config_only_where_the_caller_says_so():
    assert faults.classify_http(404, None, "Not Found").code == "not_found"
    assert faults.classify_http(404, None, "Not Found", not_found=faults.CONFIG).code == "config"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("library", ["httpx", "requests", "httplib2", "socket"])
def test_transport_errors_name_the_url(library, silent_port):
    closed = f"http://127.0.0.1:{_closed_port()}/token"
    silent = f"http://127.0.0.1:{silent_port}/token"
    calls = {
        "httpx": lambda url: httpx.get(url, timeout=0.3),
        "requests": lambda url: requests.get(url, timeout=0.3),
        "httplib2": lambda url: httplib2.Http(timeout=0.3).request(url),
        "socket": lambda url: socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])),
                                                       timeout=0.3).recv(1),
    }
    for url, code in ((closed, "connection"), (silent, "timeout")):
        with pytest.raises(Exception) as info:
            calls[library](url)
        fault = faults.classify_exception(info.value, who="google", url=url, timeout=0.3)
        assert fault is not None, repr(info.value)
        assert (fault.kind, fault.code) == ("transient", code), repr(info.value)
        assert "127.0.0.1" in fault.message and fault.message.startswith("google: ")
    assert faults.classify_exception(ValueError("a bug")) is None
