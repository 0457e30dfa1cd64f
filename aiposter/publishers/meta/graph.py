"""A small Graph API client (Facebook, Instagram with Facebook Login, Threads) on httpx.

Why not an SDK: Meta ships none for Python that covers Threads, and the three flows need only a dozen
calls. What this module owns, so the platform modules stay plain:

* the base URL and API version come from the caller (config), so a loopback fake can stand in;
* ``appsecret_proof`` (HMAC-SHA256 of the token, keyed by the app secret) goes on every call;
* every Graph error is classified by ``code``/``error_subcode`` into a :class:`PublishError` with the
  shared vocabulary (:func:`classify`), never by HTTP status alone;
* the usage headers (``X-App-Usage``, ``X-Business-Use-Case-Usage``) are read on every answer; once
  they say a budget is near 100 %, the next call is refused locally with ``rate_limited`` instead of
  being sent into a throttle;
* a call that may have committed on the platform (``irreversible=True``: publishing) and then timed out
  or lost its connection raises ``ambiguous=True``: the outcome is unknown until recovery asks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from aiposter.core.errors import PublishError

DEFAULT_RATE_LIMIT_WAIT = 300.0   # seconds: Graph throttles are rolling-hour windows; look again in 5 min
SPAM_WAIT = 3600.0                # "action restricted / suspected spam" and policy blocks: an hour
QUOTA_WAIT = 3600.0               # a daily quota used up, when the window end is unknown
USAGE_THRESHOLD = 95.0            # percent of an app/business budget at which we stop calling

# --------------------------------------------------------------------------- classification table
# Codes and subcodes from Meta's error-handling guide, the Instagram error-code reference and Page
# publishing errors seen in practice (shared/platform-contracts.md §3.4, §4.7, §5.3).

RATE_LIMIT_CODES = {4, 17, 32, 341, 613, 80001, 80002, 80003, 80004, 80005, 80006, 80008, 80014}
RATE_LIMIT_SUBCODES = {1390008}                       # Page: "you are posting too fast"
SPAM_SUBCODES = {2207051, 1346003}                    # restricted / suspected spam: back off long
AUTH_CODES = {102, 190, 10, 3}                        # session, token, permission, capability
AUTH_SUBCODES = {458, 459, 460, 463, 464, 467, 492,   # 190 subcodes: app removed, checkpoint, password ...
                 2207050, 4279013,                    # account inactive/restricted (IG, Threads)
                 1404078, 4854002}                    # Page Publishing Authorization, identity confirmation
QUOTA_SUBCODES = {2207042}                            # IG/Threads daily publishing limit (code 9)
MEDIA_CODES = {324, 352, 9004, 36000, 36001, 36003}
MEDIA_SUBCODES = {2207052, 2207004, 2207005, 2207009, 2207023, 2207026, 1366046}
CAPTION_SUBCODES = {2207010}                          # caption too long / too many hashtags or mentions
TRANSIENT_CODES = {1, 2, -1, -2}
TRANSIENT_SUBCODES = {2207001, 2207003, 2207032, 2207082, 1363047, 1609010}
NOT_READY_SUBCODES = {2207027}                        # code 9007: container not finished yet
CONTAINER_GONE_SUBCODES = {2207006, 2207008, 2207020}  # container missing/expired: a new one is needed

SUBCODE_TEXT = {
    463: "the access token has expired",
    460: "the access token was invalidated (password changed)",
    458: "the app was removed from the account",
    459: "the account is checkpointed: log in on the platform to fix it",
    464: "the account is not confirmed",
    467: "the access token is invalid",
    492: "the user no longer has a role on the Page",
    2207050: "the account is inactive, checkpointed or restricted",
    1404078: "the Page requires Page Publishing Authorization",
    4854002: "the account must confirm its identity",
    2207052: "the platform could not fetch the image from its URL",
    2207004: "the image is larger than 8 MB",
    2207005: "the image format is not supported (JPEG only)",
    2207009: "the image's aspect ratio is outside 4:5 to 1.91:1",
    2207042: "the daily publishing limit is reached",
    2207051: "the platform restricted this action (suspected spam)",
}


@dataclass
class GraphError:
    """The parsed ``{"error": {...}}`` envelope (fields optional, as Meta documents)."""

    http_status: int
    code: int | None = None
    subcode: int | None = None
    message: str = ""
    type: str = ""
    user_msg: str = ""
    fbtrace_id: str = ""
    is_transient: bool = False

    @classmethod
    def parse(cls, status: int, body: Any) -> GraphError:
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return cls(http_status=status, message=f"HTTP {status}")
        return cls(http_status=status, code=_int(err.get("code")), subcode=_int(err.get("error_subcode")),
                   message=str(err.get("message") or ""), type=str(err.get("type") or ""),
                   user_msg=str(err.get("error_user_msg") or err.get("error_user_title") or ""),
                   fbtrace_id=str(err.get("fbtrace_id") or ""),
                   is_transient=err.get("is_transient") in (True, "true"))

    def describe(self, who: str) -> str:
        text = self.user_msg or self.message or f"HTTP {self.http_status}"
        if self.subcode in SUBCODE_TEXT and SUBCODE_TEXT[self.subcode].lower() not in text.lower():
            text = f"{SUBCODE_TEXT[self.subcode]}: {text}"
        tag = f"code {self.code}" + (f"/{self.subcode}" if self.subcode else "") if self.code is not None else ""
        return f"{who}: {text[:400]}" + (f" ({tag})" if tag else "")


def classify(err: GraphError, who: str, usage: Usage | None = None) -> PublishError:
    """One Graph error -> one PublishError with the shared code vocabulary. Order matters: subcodes
    are more specific than codes."""
    msg = err.describe(who)
    code, sub = err.code, err.subcode
    wait = usage.regain_seconds if usage and usage.regain_seconds > 0 else None
    if sub in QUOTA_SUBCODES or code == 9:
        return PublishError(msg, code="quota", retry_after=QUOTA_WAIT)
    if sub in SPAM_SUBCODES or code == 368:
        return PublishError(msg, code="rate_limited", retry_after=max(wait or 0, SPAM_WAIT))
    if code in RATE_LIMIT_CODES or sub in RATE_LIMIT_SUBCODES:
        return PublishError(msg, code="rate_limited", retry_after=wait or DEFAULT_RATE_LIMIT_WAIT)
    if sub in NOT_READY_SUBCODES or code == 9007:
        return PublishError(msg, code="not_ready", retry_after=5)
    if code in AUTH_CODES or sub in AUTH_SUBCODES or (code is not None and 200 <= code <= 299) \
            or code in (25, 283) or (code == 100 and sub == 33):
        return PublishError(msg, permanent=True, code="auth")
    if code in (12, 2635):  # the configured Graph version is deprecated or gone
        return PublishError(f"{msg}; set a current Graph API version in the config", code="config",
                            retry_after=3600)
    if code == 100 and "appsecret" in err.message.lower():
        return PublishError(f"{msg}; check the app secret in the config", code="config", retry_after=3600)
    if code in MEDIA_CODES or sub in MEDIA_SUBCODES:
        return PublishError(msg, permanent=True, code="media")
    if sub in CAPTION_SUBCODES or code == 36004:
        return PublishError(msg, permanent=True, code="caption")
    if sub in CONTAINER_GONE_SUBCODES:
        return PublishError(msg, permanent=True, code="container_gone")
    if code in TRANSIENT_CODES or sub in TRANSIENT_SUBCODES or err.is_transient or err.http_status >= 500:
        kind = "overloaded" if err.http_status == 503 else "server_error"
        return PublishError(msg, code=kind)
    if code in (506,) or sub == 1366051:
        return PublishError(msg, permanent=True, code="duplicate")
    if err.http_status == 404 and code is None:
        return PublishError(f"{msg}; is the Graph base URL right?", code="config", retry_after=3600)
    return PublishError(msg, permanent=True, code="bad_request")


# --------------------------------------------------------------------------- usage headers


@dataclass
class Usage:
    """The busiest budget the last answer reported, in percent, and Meta's own estimate (seconds) of
    when access comes back (``estimated_time_to_regain_access`` is in minutes on the wire)."""

    percent: float = 0.0
    regain_seconds: float = 0.0
    header: str = ""

    @classmethod
    def from_headers(cls, headers: httpx.Headers | dict) -> Usage:
        best = cls()
        app = _json_header(headers, "x-app-usage")
        if isinstance(app, dict):
            best = best._max(_percent(app), 0.0, "X-App-Usage")
        for name in ("x-business-use-case-usage", "x-ad-account-usage"):
            buc = _json_header(headers, name)
            if not isinstance(buc, dict):
                continue
            rows = [r for v in buc.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, dict)]
            if name == "x-ad-account-usage":
                rows = [buc]
            for row in rows:
                regain = float(_num(row.get("estimated_time_to_regain_access")) or 0) * 60
                best = best._max(_percent(row), regain, "X-Business-Use-Case-Usage")
        return best

    def _max(self, percent: float, regain: float, header: str) -> Usage:
        if percent > self.percent or (percent == self.percent and regain > self.regain_seconds):
            return Usage(percent, max(regain, self.regain_seconds), header)
        return Usage(self.percent, max(regain, self.regain_seconds), self.header)

    def backoff_seconds(self, threshold: float = USAGE_THRESHOLD) -> float | None:
        """How long to stay away, or None when there is room. Meta's estimate wins when it gives one;
        otherwise the remaining headroom sets the wait (at 100 % a full default window)."""
        if self.regain_seconds > 0:
            return self.regain_seconds
        if self.percent < threshold or self.percent <= 0:
            return None
        return DEFAULT_RATE_LIMIT_WAIT if self.percent >= 100 else DEFAULT_RATE_LIMIT_WAIT / 5


def _json_header(headers, name: str) -> Any:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _percent(d: dict) -> float:
    vals = [_num(d.get(k)) for k in ("call_count", "total_time", "total_cputime", "acc_id_util_pct")]
    return max([v for v in vals if v is not None] or [0.0])


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the client


def appsecret_proof(token: str, app_secret: str) -> str:
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


@dataclass
class Timeouts:
    connect: float = 10.0
    read: float = 60.0      # an upload or a container creation (Meta fetches the image first) can be slow


class GraphClient:
    """Calls one Graph host with one token. Thread-safe as far as httpx.Client is; built per connection.

    ``who`` names the platform in messages ("Instagram", ...). ``proof=False`` leaves out
    ``appsecret_proof`` (not documented for Threads; sent there only when a secret is configured).
    """

    def __init__(self, base_url: str, version: str, access_token: str, *, app_secret: str | None = None,
                 who: str = "Facebook", timeouts: Timeouts | None = None, http: httpx.Client | None = None,
                 usage_threshold: float = USAGE_THRESHOLD, clock=time.monotonic):
        self.root = base_url.rstrip("/")
        self.base = f"{self.root}/{version.strip('/')}" if version else self.root
        self.token = access_token
        self.app_secret = app_secret or None
        self.who = who
        t = timeouts or Timeouts()
        self._own_http = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(t.read, connect=t.connect))
        self.usage = Usage()
        self.usage_threshold = usage_threshold
        self._clock = clock
        self._blocked_until = 0.0

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def get(self, path: str, params: dict | None = None, *, versioned: bool = True) -> dict:
        return self.request("GET", path, params=params, versioned=versioned)

    def post(self, path: str, data: dict | None = None, *, files: dict | None = None,
             irreversible: bool = False) -> dict:
        return self.request("POST", path, data=data, files=files, irreversible=irreversible)

    def get_url(self, url: str) -> dict:
        """Follow a ``paging.next`` URL as Graph gave it (it carries the token already; the proof is
        added again so the call is signed like every other)."""
        return self.request("GET", url, absolute=True)

    def request(self, method: str, path: str, *, params: dict | None = None, data: dict | None = None,
                files: dict | None = None, irreversible: bool = False, versioned: bool = True,
                absolute: bool = False) -> dict:
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            raise PublishError(f"{self.who}: API usage is at {self.usage.percent:.0f}% of its budget "
                               f"({self.usage.header}); waiting before the next call",
                               code="rate_limited", retry_after=remaining)
        url = path if absolute else f"{self.base if versioned else self.root}/{path.lstrip('/')}"
        if absolute:  # httpx replaces a URL's query with ``params``: carry the cursor over explicitly
            u = httpx.URL(url)
            params = {**dict(u.params), **(params or {})}
            url = str(u.copy_with(query=None))
        auth = {"access_token": self.token}
        if self.app_secret:
            auth["appsecret_proof"] = appsecret_proof(self.token, self.app_secret)
        if method == "GET":
            params = {**(params or {}), **auth}
        else:
            params = {**(params or {})}
            data = {**(data or {}), **auth}
        try:
            r = self.http.request(method, url, params=params or None, data=data, files=files)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise PublishError(f"{self.who} could not be reached at {self.root}: {_short(exc)}",
                               code="connection" if isinstance(exc, httpx.ConnectError) else "timeout") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise PublishError(f"{self.who} did not answer in time ({method} {_path(url)}): {_short(exc)}"
                               + ("; the post may or may not exist" if irreversible else ""),
                               code="timeout", ambiguous=irreversible) from None
        except httpx.HTTPError as exc:  # connection dropped mid-answer, protocol errors
            raise PublishError(f"{self.who} dropped the connection ({method} {_path(url)}): {_short(exc)}"
                               + ("; the post may or may not exist" if irreversible else ""),
                               code="connection", ambiguous=irreversible) from None
        self._note_usage(r.headers)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code == 200 and isinstance(body, dict) and "error" not in body:
            return body
        if r.status_code == 200:  # 200 with an unusable body: treat like a server fault
            raise PublishError(f"{self.who} answered something unusable to {method} {_path(url)}",
                               code="server_error", ambiguous=irreversible)
        raise classify(GraphError.parse(r.status_code, body), self.who, self.usage)

    def _note_usage(self, headers: httpx.Headers) -> None:
        self.usage = Usage.from_headers(headers)
        wait = self.usage.backoff_seconds(self.usage_threshold)
        if wait:
            self._blocked_until = self._clock() + wait

    def backoff_seconds(self) -> float | None:
        """Seconds until this client will call again (usage near its budget), for a shared pause."""
        remaining = self._blocked_until - self._clock()
        return remaining if remaining > 0 else None


def _path(url: str) -> str:
    return re.sub(r"access_token=[^&]+", "access_token=…", httpx.URL(url).path)


def _short(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200] or exc.__class__.__name__
