"""One HTTP fault classifier for every adapter: LLM SDKs, OAuth, Drive and the Meta Graph APIs.

An adapter hands over what came back (a status code, headers and body, or the transport exception) and
gets a :class:`Fault`: a *kind* that says what the pipeline should do, a *code* from the shared
vocabulary (``StepError.code``), a one-line message and how long the remote asked us to wait.

Kinds:

* ``transient``: a retry can help soon (timeout, connection, 5xx, overloaded);
* ``rate_limited``: slow down, usually with a ``retry_after``;
* ``quota``: a budget is used up (daily quota, billing, credit): wait until it frees or is topped up;
* ``auth``: credentials refused or revoked: needs the operator or the user;
* ``config``: the install is misconfigured (wrong base URL, unknown model, API not enabled);
* ``permanent``: something about this one item (bad request, refused content, file not found).

The last four are permanent for the item that hit them; all but ``permanent`` are faults of the whole
adapter (or account), so the pipeline pauses that adapter instead of failing every item the same way.

Structured error details are read wherever the providers put them: Google's ``google.rpc`` details
(``ErrorInfo.reason`` such as ``API_KEY_INVALID``, ``RetryInfo.retryDelay``, ``QuotaFailure``), Google
discovery APIs' ``errors[].reason``, OpenAI's ``error.code``/``error.type``, Anthropic's ``error.type``,
the Meta Graph ``error.code``/``error_subcode`` and OAuth token endpoints' ``error``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from aiposter.core.errors import StepError

TRANSIENT, RATE_LIMITED, QUOTA, AUTH, CONFIG, PERMANENT = (
    "transient", "rate_limited", "quota", "auth", "config", "permanent")
# Kinds that are about the adapter or account, not the item: every item would fail the same way.
ADAPTER_KINDS = {TRANSIENT, RATE_LIMITED, QUOTA, AUTH, CONFIG}
# The shared vocabulary's codes, by kind (for classifying a StepError that did not come from here).
TRANSIENT_CODES = {"timeout", "connection", "server_error", "overloaded"}
CODE_KINDS = {**{c: TRANSIENT for c in TRANSIENT_CODES}, "rate_limited": RATE_LIMITED, "quota": QUOTA,
              "auth": AUTH, "config": CONFIG}


@dataclass(frozen=True)
class Fault:
    kind: str
    code: str
    message: str
    retry_after: float | None = None
    status: int | None = None
    reason: str = ""   # the provider's own machine-readable reason, when it gave one

    @property
    def permanent(self) -> bool:
        """For the item that hit it: only transient faults and rate limits may succeed on a retry."""
        return self.kind not in (TRANSIENT, RATE_LIMITED)

    def error(self, cls: type[StepError] = StepError, **extra: Any) -> StepError:
        return cls(self.message, permanent=self.permanent, retry_after=self.retry_after, code=self.code,
                   **extra)


def kind_of(error: StepError) -> str:
    """The kind of a StepError by its code (adapters that did not use this module still speak the
    vocabulary): an unknown code is about the item."""
    return CODE_KINDS.get(error.code or "", PERMANENT if error.permanent else TRANSIENT)


# --------------------------------------------------------------------------- waiting times


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    if value is None and isinstance(headers, dict):  # a plain dict is case-sensitive
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value)


def retry_after(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), or from
    Meta's ``x-business-use-case-usage`` (``estimated_time_to_regain_access``, in minutes)."""
    raw_ms = _header(headers, "retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = _header(headers, "retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    usage = _header(headers, "x-business-use-case-usage")
    if usage:
        try:
            minutes = [float(entry.get("estimated_time_to_regain_access") or 0)
                       for entries in json.loads(usage).values() for entry in entries]
        except (ValueError, AttributeError, TypeError):
            minutes = []
        if minutes and max(minutes) > 0:
            return max(minutes) * 60
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _duration(value: Any) -> float | None:
    """A protobuf Duration in its JSON form (``"30s"``, ``"1.5s"``) or as ``{"seconds", "nanos"}``."""
    if isinstance(value, dict):
        try:
            return float(value.get("seconds") or 0) + float(value.get("nanos") or 0) / 1e9
        except (TypeError, ValueError):
            return None
    match = _DURATION.match(str(value or ""))
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------- error bodies


@dataclass
class Details:
    """What an error body says, whatever the provider's envelope."""

    message: str = ""
    reasons: tuple[str, ...] = ()    # ErrorInfo reasons, errors[].reason, OpenAI code/type, OAuth error...
    status: str = ""                 # google.rpc status, e.g. RESOURCE_EXHAUSTED
    retry_delay: float | None = None  # google.rpc.RetryInfo
    quota_ids: tuple[str, ...] = ()  # google.rpc.QuotaFailure violations
    graph_code: int | None = None    # Meta Graph error.code
    graph_subcode: int | None = None


def parse_body(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        if text[:1] in "{[":
            try:
                return json.loads(text)
            except ValueError:
                return body
    return body


def details(body: Any) -> Details:
    body = parse_body(body)
    out = Details()
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # some Google endpoints wrap the envelope in a list
    if isinstance(body, str):
        out.message = " ".join(re.sub(r"<[^>]*>", " ", body).split())[:300]  # an HTML error page: its text
        return out
    if not isinstance(body, dict):
        return out
    error = body.get("error")
    reasons: list[str] = []
    if isinstance(error, str):  # OAuth 2.0 token endpoints (RFC 6749 section 5.2)
        reasons.append(error)
        out.message = str(body.get("error_description") or error)
        out.reasons = tuple(reasons)
        return out
    if not isinstance(error, dict):
        out.message = str(body.get("message") or body.get("detail") or "")
        return out
    out.message = str(error.get("message") or "")
    for key in ("code", "type"):  # OpenAI code/type, Anthropic type; Google's numeric code is the status
        value = error.get(key)
        if isinstance(value, str) and value:
            reasons.append(value)
    if isinstance(error.get("status"), str):
        out.status = error["status"]
    if isinstance(error.get("code"), int) and not out.status:
        out.graph_code = error["code"]
        sub = error.get("error_subcode")
        out.graph_subcode = sub if isinstance(sub, int) else None
    for item in error.get("errors") or []:  # Google discovery APIs (Drive)
        if isinstance(item, dict) and item.get("reason"):
            reasons.append(str(item["reason"]))
    quota_ids: list[str] = []
    for detail in error.get("details") or []:  # google.rpc details
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo") and detail.get("reason"):
            reasons.append(str(detail["reason"]))
        elif kind.endswith("google.rpc.RetryInfo"):
            out.retry_delay = _duration(detail.get("retryDelay"))
        elif kind.endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict):
                    quota_ids.append(str(violation.get("quotaId") or violation.get("subject") or ""))
    out.reasons = tuple(reasons)
    out.quota_ids = tuple(quota_ids)
    return out


# --------------------------------------------------------------------------- classification

_AUTH_REASONS = {"api_key_invalid", "api_key_expired", "invalid_api_key", "authentication_error",
                 "autherror", "invalid_grant", "unauthenticated", "permission_error", "permission_denied",
                 "insufficientpermissions", "access_token_expired", "invalid_token"}
_QUOTA_REASONS = {"insufficient_quota", "billing_error", "billing_not_active", "dailylimitexceeded",
                  "quotaexceeded", "billing_hard_limit_reached"}
_RATE_REASONS = {"ratelimitexceeded", "userratelimitexceeded", "rate_limit_exceeded", "rate_limit_error",
                 "rate_limit"}
_CONFIG_REASONS = {"model_not_found", "accessnotconfigured", "service_disabled", "api_key_service_blocked",
                   "invalid_client", "unauthorized_client", "consumer_invalid"}
_ITEM_REASONS = {"filenotdownloadable", "cannotdownloadabusivefile", "insufficientfilepermissions",
                 "notfound", "content_policy_violation"}
_POLICY_HINTS = ("content_policy", "content_filter", "safety system", "moderation")
_QUOTA_HINTS = ("credit balance is too low", "insufficient_quota", "exceeded your current quota",
                "billing", "purchase credits")
_AUTH_HINTS = ("api key not valid", "api key expired", "invalid api key", "incorrect api key",
               "invalid x-api-key")
# Meta Graph error codes (developers.facebook.com/docs/graph-api/guides/error-handling).
_GRAPH_AUTH = {102, 190, 10, 200, 458, 459, 460, 463, 464, 467}
_GRAPH_RATE = {4, 17, 32, 613, 80001, 80002, 80004, 80005, 80006, 80008}
_GRAPH_TRANSIENT = {1, 2}
_GRAPH_QUOTA_SUBCODES = {2207042}  # Instagram: the daily publishing limit is reached


def classify_http(status: int, headers: Any = None, body: Any = None, *, who: str = "",
                  not_found: str = PERMANENT, hint: str = "", now: datetime | None = None) -> Fault:
    """Classify an HTTP error answer. ``who`` starts the message (``"openai"``); ``not_found``: what a 404
    means for this endpoint (``config`` where it can only mean a wrong base URL or model); ``hint`` is
    appended to the message of adapter-wide faults (e.g. which settings to check)."""
    d = details(body)
    reasons = {r.lower() for r in d.reasons}
    text = f"{d.message} {' '.join(d.reasons)}".lower()
    wait = retry_after(headers, now)
    if wait is None:
        wait = d.retry_delay
    what = d.message
    message = f"{who + ': ' if who else ''}HTTP {status}" + (f": {' '.join(what.split())[:300]}" if what else "")
    reason = (d.reasons[-1] if d.reasons else d.status) or (str(d.graph_code) if d.graph_code else "")

    def fault(kind: str, code: str) -> Fault:
        msg = message
        if hint and kind in (AUTH, CONFIG, QUOTA):
            msg = f"{msg}; {hint}"
        return Fault(kind, code, msg, wait if kind in (TRANSIENT, RATE_LIMITED, QUOTA) else None, status,
                     reason)

    # Provider reasons first: they are more precise than the status.
    if d.graph_code is not None:
        if d.graph_subcode in _GRAPH_QUOTA_SUBCODES:
            return fault(QUOTA, "quota")
        if d.graph_code in _GRAPH_AUTH or 200 <= d.graph_code <= 299:
            return fault(AUTH, "auth")
        if d.graph_code in _GRAPH_RATE:
            return fault(RATE_LIMITED, "rate_limited")
        if d.graph_code in _GRAPH_TRANSIENT:
            return fault(TRANSIENT, "server_error")
    if reasons & _ITEM_REASONS or any(h in text for h in _POLICY_HINTS):
        policy = "content_policy_violation" in reasons or any(h in text for h in _POLICY_HINTS)
        return fault(PERMANENT, "refused" if policy else ("not_found" if "notfound" in reasons else "forbidden"))
    if reasons & _QUOTA_REASONS or any(h in text for h in _QUOTA_HINTS):
        return fault(QUOTA, "quota")
    if status == 429 or d.status == "RESOURCE_EXHAUSTED":
        if any("perday" in q.lower() for q in d.quota_ids):
            return fault(QUOTA, "quota")  # a daily quota used up: waiting minutes will not help
        return fault(RATE_LIMITED, "rate_limited")
    if reasons & _RATE_REASONS:
        return fault(RATE_LIMITED, "rate_limited")
    if reasons & _CONFIG_REASONS:
        return fault(CONFIG, "config")
    if status in (401, 407) or reasons & _AUTH_REASONS or any(h in text for h in _AUTH_HINTS):
        return fault(AUTH, "auth")
    if status in (408, 504) or d.status == "DEADLINE_EXCEEDED":
        return fault(TRANSIENT, "timeout")
    if status == 529 or "overloaded" in reasons or "overloaded_error" in reasons:
        return fault(TRANSIENT, "overloaded")
    if status >= 500 or status == 409:
        return fault(TRANSIENT, "server_error")
    if status == 402:
        return fault(QUOTA, "quota")
    if status == 403:
        return fault(AUTH, "auth")
    if status == 404:
        return fault(CONFIG, "config") if not_found == CONFIG else fault(PERMANENT, "not_found")
    if d.status == "FAILED_PRECONDITION":
        return fault(CONFIG, "config")  # Gemini: billing not enabled, or not offered in the region
    if status == 413:
        return fault(PERMANENT, "too_large")
    return fault(PERMANENT, "bad_request")


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


# Matched by class name so that this module needs none of the HTTP libraries: httpx (and httpx2, which
# google-genai may use), requests, httplib2, urllib3, the OpenAI and Anthropic SDKs, and the stdlib.
_TIMEOUT_NAMES = {"TimeoutException", "Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError", "timeout",
                  "APITimeoutError", "WriteTimeout", "PoolTimeout", "ReadTimeoutError", "ConnectTimeoutError"}
_CONNECTION_NAMES = {"TransportError", "ConnectionError", "ConnectError", "NetworkError", "RemoteProtocolError",
                     "ServerNotFoundError", "HttpLib2Error", "APIConnectionError", "ProtocolError",
                     "NewConnectionError", "MaxRetryError", "SSLError", "gaierror", "herror"}


def _url_of(exc: BaseException) -> str | None:
    for obj in (exc, exc.__cause__, exc.__context__):
        if obj is None:
            continue
        try:
            request = getattr(obj, "request", None)  # httpx raises RuntimeError when it has none
        except RuntimeError:
            request = None
        url = getattr(request, "url", None)
        if url:
            return str(url)
    return None


def classify_exception(exc: BaseException, *, who: str = "", url: str | None = None,
                       timeout: float | None = None) -> Fault | None:
    """A transport exception (timeout, refused connection, DNS, TLS) as a transient Fault naming the URL,
    or None if ``exc`` is not one (e.g. a bug)."""
    names = _names(exc)
    where = _url_of(exc) or url
    prefix = f"{who}: " if who else ""
    if names & _TIMEOUT_NAMES:
        limit = f" within {timeout:g} s" if timeout else ""
        return Fault(TRANSIENT, "timeout", f"{prefix}no answer{limit}" + (f" from {where}" if where else ""))
    if names & _CONNECTION_NAMES:
        detail = _first_line(exc)
        target = f" to {where}" if where else ""
        return Fault(TRANSIENT, "connection", f"{prefix}cannot connect{target}" + (f": {detail}" if detail else ""))
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text and exc.__cause__ is not None:
        text = str(exc.__cause__).strip()
    return (text.splitlines() or [""])[0][:200]
