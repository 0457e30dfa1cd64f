"""Loopback fakes of Meta's Graph API (Facebook Pages, Instagram with Facebook Login) and the Threads API.

They speak the wire format of shared/platform-contracts.md §3–5 and check what Meta checks:

* versioned paths (``/v21.0/...``; Threads ``/v1.0/...``; ``/refresh_access_token`` unversioned);
* parameters from the query string, form, multipart or JSON body; IDs as strings;
* ``access_token`` (query, form or ``Authorization: Bearer``) and ``appsecret_proof`` (HMAC-SHA256 of the
  token keyed by the app secret; required on the Graph fake, checked when present on Threads);
  expired/revoked tokens answer 190 with Meta's subcodes; missing permissions 10/200;
* errors in Graph's envelope ``{"error": {message, type, code, error_subcode, fbtrace_id, is_transient}}``;
* ``X-App-Usage`` and (Page tokens) ``X-Business-Use-Case-Usage`` on every answer;
* Instagram/Threads containers **download ``image_url``** over HTTP with Meta's crawler user agent and
  refuse a non-JPEG (Threads: also PNG), > 8 MB or a wrong aspect ratio with the real codes; they go
  ``IN_PROGRESS`` → ``FINISHED``/``ERROR`` after a configurable number of status reads (and/or seconds),
  ``PUBLISHED`` once published, ``EXPIRED`` on request; publishing counts against a rolling quota.

Faults are scripted per endpoint name (:meth:`MetaFake.fail`): a Graph error, a raw HTTP status, a
dropped connection, a hang, or **commit then drop/hang** (the publish happens, the answer is lost).
Inspection helpers (:meth:`FakeGraph.page_posts`, :meth:`MetaFake.media_of`, ``publish_count``) make
exactly-once assertions direct.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from PIL import Image

APP_ID, APP_SECRET = "meta-app", "meta-secret"
THREADS_APP_ID, THREADS_APP_SECRET = "threads-app", "threads-secret"
FETCHER_UA = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
MAX_IMAGE = 8 * 1024 * 1024


# --------------------------------------------------------------------------- faults


@dataclass
class Fault:
    kind: str                       # error | http | drop | hang | commit_then_drop | commit_then_hang
    status: int = 400
    code: int | None = None
    subcode: int | None = None
    message: str = ""
    transient: bool = False
    headers: dict = field(default_factory=dict)
    seconds: float = 5.0


def graph_error(code: int, subcode: int | None = None, message: str = "", *, status: int = 400,
                transient: bool = False, headers: dict | None = None) -> Fault:
    return Fault("error", status, code, subcode, message or f"(#{code}) scripted error", transient, headers or {})


def http_status(status: int, body: str = "<html>Bad Gateway</html>") -> Fault:
    return Fault("http", status, message=body)


def drop() -> Fault:
    return Fault("drop")


def hang(seconds: float = 5.0) -> Fault:
    return Fault("hang", seconds=seconds)


def commit_then_drop() -> Fault:
    return Fault("commit_then_drop")


def commit_then_hang(seconds: float = 5.0) -> Fault:
    return Fault("commit_then_hang", seconds=seconds)


class GraphFail(Exception):
    def __init__(self, code: int, message: str, subcode: int | None = None, status: int = 400,
                 type_: str = "OAuthException", transient: bool = False, headers: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.subcode, self.status = code, message, subcode, status
        self.type, self.transient, self.headers = type_, transient, headers or {}


# --------------------------------------------------------------------------- state


@dataclass
class Token:
    value: str
    kind: str                       # user | page | threads | app
    subject: str                    # user id, page id, threads user id, app id
    scopes: set[str]
    issued_at: float
    expires_at: float | None = None
    revoked: int | None = None      # 190 subcode once revoked (460 password changed, 458 app removed ...)


@dataclass
class Container:
    id: str
    owner: str
    platform: str                   # instagram | threads
    caption: str
    alt_text: str
    image_sha256: str
    created_at: float
    reads_left: int
    ready_at: float
    outcome: str = "FINISHED"       # FINISHED | ERROR
    error: str = ""
    status: str = "IN_PROGRESS"
    media_id: str | None = None
    image_size: tuple[int, int] = (0, 0)  # width, height of the image fetched for it


@dataclass
class Request:
    method: str
    path: str
    endpoint: str
    params: dict
    headers: dict


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


class MetaFake:
    """Transport, auth, faults, containers and quota: what Graph and Threads share."""

    unversioned: set[str] = set()

    def __init__(self, *, version: str, app_id: str, app_secret: str, require_proof: bool):
        self.version = version
        self.app_id, self.app_secret = app_id, app_secret
        self.require_proof = require_proof
        self.tokens: dict[str, Token] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[Request] = []
        self.fetches: list[dict] = []
        self.containers: dict[str, Container] = {}
        self.media: dict[str, dict] = {}         # media id -> record (IG media, Threads posts)
        self.publishes: dict[str, list[float]] = {}  # account -> publish times (quota)
        self.quota_total: dict[str, int] = {}
        self.quota_duration = 86400
        self.container_steps = 0                  # status reads answered IN_PROGRESS before the outcome
        self.container_delay = 0.0                # and/or seconds after creation
        self.container_outcome = "FINISHED"
        self.container_error = ""
        self.app_usage: dict | None = {"call_count": 1, "total_cputime": 1, "total_time": 1}
        self.buc_usage: dict | None = {"call_count": 1, "total_cputime": 1, "total_time": 1,
                                       "estimated_time_to_regain_access": 0}
        self.clock_offset = 0.0
        self.lock = threading.RLock()
        self._ids = itertools.count(17_841_000_000_000_001)
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                fake._serve(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._serve(self, "POST")

            def do_DELETE(self) -> None:  # noqa: N802
                fake._serve(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ test helpers

    def now(self) -> float:
        return time.time() + self.clock_offset

    def new_id(self) -> str:
        return str(next(self._ids))

    def add_token(self, kind: str, subject: str, scopes=(), *, expires_in: float | None = None,
                  age: float = 0.0, value: str | None = None) -> str:
        value = value or f"{kind.upper()}{secrets.token_hex(12)}"
        now = self.now()
        self.tokens[value] = Token(value, kind, subject, set(scopes), now - age,
                                   now - age + expires_in if expires_in else None)
        return value

    def revoke(self, token: str, subcode: int = 460) -> None:
        self.tokens[token].revoked = subcode

    def expire(self, token: str) -> None:
        self.tokens[token].expires_at = self.now() - 1

    def fail(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for the next calls to ``endpoint`` (names in each fake's routes), one per call."""
        with self.lock:
            self.faults.setdefault(endpoint, []).extend(faults)

    def calls(self, endpoint: str) -> list[Request]:
        return [r for r in self.requests if r.endpoint == endpoint]

    def media_of(self, account: str) -> list[dict]:
        """What an Instagram/Threads account shows, oldest first: the exactly-once view."""
        return sorted((m for m in self.media.values() if m["owner"] == account), key=lambda m: m["time"])

    def publish_count(self, account: str) -> int:
        return len(self.publishes.get(account, []))

    def expire_container(self, cid: str) -> None:
        self.containers[cid].status = "EXPIRED"

    # ------------------------------------------------------------------ transport

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        u = urlparse(h.path)
        params = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        files: dict[str, bytes] = {}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        ctype = h.headers.get("Content-Type") or ""
        if raw and ctype.startswith("application/json"):
            params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in json.loads(raw).items()})
        elif raw and ctype.startswith("multipart/form-data"):
            msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True) or b""
                if part.get_filename() is not None:
                    files[name] = payload
                else:
                    params[name] = payload.decode()
        elif raw:
            params.update({k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()})
        auth = h.headers.get("Authorization") or ""
        if "access_token" not in params and auth.split(" ")[0] in ("Bearer", "OAuth"):
            params["access_token"] = auth.split(" ", 1)[1]

        path = u.path
        prefix = f"/{self.version}/"
        if path.startswith(prefix):
            parts = [p for p in path[len(prefix):].split("/") if p]
        elif path.strip("/") in self.unversioned:
            parts = [path.strip("/")]
        else:
            m = re.match(r"/(v\d+\.\d+)/", path)
            err = (GraphFail(2635, f"(#2635) You are calling a deprecated version of the API ({m.group(1)}); "
                             f"this server speaks {self.version}") if m
                   else GraphFail(100, "Unknown path components: " + path, type_="GraphMethodException"))
            return self._send(h, err.status, self._envelope(err), {})
        endpoint, handler, args = self.route(method, parts, params)
        with self.lock:
            self.requests.append(Request(method, path, endpoint, dict(params), dict(h.headers)))
            queue = self.faults.get(endpoint) or []
            fault = queue.pop(0) if queue else None
        token = None
        if fault and fault.kind in ("drop", "hang", "http", "error"):
            return self._fault(h, fault, token)
        try:
            if handler is None:
                raise GraphFail(100, f"Unsupported {method} request. Object with ID '{'/'.join(parts)}' does not "
                                "exist, cannot be loaded due to missing permissions, or does not support this "
                                "operation.", 33, type_="GraphMethodException")
            token = self._authenticate(params, endpoint)
            with self.lock:
                status, body = 200, handler(token, params, files, *args)
            headers = self._usage_headers(token)
        except GraphFail as exc:
            status, body, headers = exc.status, self._envelope(exc), {**self._usage_headers(token), **exc.headers}
        if fault:  # commit_then_*: the work is done; the answer is lost
            return self._fault(h, fault, token)
        self._send(h, status, body, headers)

    def _fault(self, h, fault: Fault, token) -> None:
        if fault.kind in ("hang", "commit_then_hang"):
            self._stop.wait(fault.seconds)
        if fault.kind in ("drop", "commit_then_drop", "hang", "commit_then_hang"):
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault.kind == "http":
            data = fault.message.encode()
            h.send_response(fault.status)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        err = GraphFail(fault.code or 1, fault.message, fault.subcode, fault.status, transient=fault.transient)
        self._send(h, fault.status, self._envelope(err), {**self._usage_headers(token), **fault.headers})

    def _send(self, h, status: int, body: dict, headers: dict) -> None:
        data = json.dumps(body).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json; charset=UTF-8")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _envelope(exc: GraphFail) -> dict:
        err = {"message": exc.message, "type": exc.type, "code": exc.code,
               "fbtrace_id": "A" + secrets.token_hex(8), "is_transient": exc.transient}
        if exc.subcode is not None:
            err["error_subcode"] = exc.subcode
        return {"error": err}

    def _usage_headers(self, token: Token | None) -> dict:
        out = {}
        if self.app_usage is not None:
            out["X-App-Usage"] = json.dumps(self.app_usage)
        if self.buc_usage is not None and token is not None and token.kind == "page":
            out["X-Business-Use-Case-Usage"] = json.dumps({token.subject: [{"type": "pages", **self.buc_usage}]})
        return out

    def _authenticate(self, params: dict, endpoint: str) -> Token:
        value = params.get("access_token")
        if not value:
            raise GraphFail(104, "An access token is required to request this resource.")
        if value == f"{self.app_id}|{self.app_secret}":
            token = Token(value, "app", self.app_id, set(), 0)
        else:
            token = self.tokens.get(value)
        if token is None:
            raise GraphFail(190, "Invalid OAuth access token - Cannot parse access token")
        proof = params.get("appsecret_proof")
        if proof is not None or self.require_proof:
            if proof is None:
                raise GraphFail(100, "API calls from the server require an appsecret_proof argument",
                                type_="GraphMethodException")
            good = hmac.new(self.app_secret.encode(), value.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof, good):
                raise GraphFail(100, "Invalid appsecret_proof provided in the API argument",
                                type_="GraphMethodException")
        if token.revoked:
            text = {460: "The session has been invalidated because the user changed their password",
                    458: "The user has not authorized application " + self.app_id}.get(
                        token.revoked, "The session has been invalidated")
            raise GraphFail(190, f"Error validating access token: {text}.", token.revoked)
        if token.expires_at is not None and token.expires_at <= self.now():
            raise GraphFail(190, f"Error validating access token: Session has expired on {_ts(token.expires_at)}.",
                            463)
        return token

    # ------------------------------------------------------------------ routing (subclasses)

    def route(self, method: str, parts: list[str], params: dict):
        """(endpoint name, handler(token, params, files, *args) or None, args)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ images and containers

    def fetch_image(self, url: str) -> tuple[bytes, str]:
        req = urllib.request.Request(url, headers={"User-Agent": FETCHER_UA})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                data = r.read(MAX_IMAGE + 1)
                ctype = r.headers.get("Content-Type", "")
                self.fetches.append({"url": url, "user_agent": FETCHER_UA, "status": r.status, "type": ctype})
                return data, ctype
        except urllib.error.HTTPError as exc:
            self.fetches.append({"url": url, "user_agent": FETCHER_UA, "status": exc.code, "type": ""})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.fetches.append({"url": url, "user_agent": FETCHER_UA, "status": None, "type": str(exc)})
        raise GraphFail(9004, "The media could not be fetched from this uri: " + url, 2207052)

    def new_container(self, owner: str, platform: str, caption: str, alt_text: str, data: bytes) -> Container:
        now = self.now()
        c = Container(self.new_id(), owner, platform, caption, alt_text, hashlib.sha256(data).hexdigest(), now,
                      self.container_steps, now + self.container_delay, self.container_outcome, self.container_error,
                      image_size=image_size(data))
        self.containers[c.id] = c
        return c

    def container_status(self, c: Container) -> str:
        if c.status == "IN_PROGRESS":
            if c.reads_left > 0:
                c.reads_left -= 1
            elif self.now() >= c.ready_at:
                c.status = c.outcome
        if c.status in ("FINISHED", "IN_PROGRESS", "ERROR") and self.now() - c.created_at > 86400:
            c.status = "EXPIRED"
        return c.status

    def quota_usage(self, account: str, since: float | None = None) -> int:
        floor = max(self.now() - self.quota_duration, since or 0)
        return sum(1 for t in self.publishes.get(account, []) if t > floor)

    def publish_container(self, owner: str, creation_id: str, permalink) -> dict:
        c = self.containers.get(creation_id)
        if c is None or c.owner != owner:
            raise GraphFail(24, "The requested resource does not exist", 2207006)
        if c.status == "IN_PROGRESS":
            raise GraphFail(9007, "Media ID is not available", 2207027)
        if c.status == "EXPIRED":
            raise GraphFail(24, "The media builder with creation id does not exist or has expired", 2207008)
        if c.status == "ERROR":
            raise GraphFail(9007, "Media ID is not available: the container failed processing", 2207027)
        if c.status == "PUBLISHED":
            raise GraphFail(100, "This media has already been published", 2207008)  # [U] exact answer
        total = self.quota_total.get(owner, 100)
        if self.quota_usage(owner) >= total:
            raise GraphFail(9, "Application request limit reached: the account reached its publishing limit",
                            2207042)
        mid = self.new_id()
        now = self.now()
        c.status, c.media_id = "PUBLISHED", mid
        self.publishes.setdefault(owner, []).append(now)
        self.media[mid] = {"id": mid, "owner": owner, "platform": c.platform, "caption": c.caption,
                           "alt_text": c.alt_text, "image_sha256": c.image_sha256, "time": now,
                           "container_id": c.id, "permalink": permalink(mid)}
        return {"id": mid}

    def limit(self, owner: str, params: dict) -> dict:
        since = float(params["since"]) if params.get("since") else None
        if since is not None and since < self.now() - 86400 - 60:
            raise GraphFail(100, "(#100) The parameter since must be within the last 24 hours")
        return {"data": [{"quota_usage": self.quota_usage(owner, since),
                          "config": {"quota_total": self.quota_total.get(owner, 100),
                                     "quota_duration": self.quota_duration}}]}

    def list_media(self, owner: str, params: dict, text_key: str) -> dict:
        items = sorted((m for m in self.media.values() if m["owner"] == owner), key=lambda m: -m["time"])
        limit = int(params.get("limit") or 25)
        return {"data": [{"id": m["id"], text_key: m["caption"], "timestamp": _ts(m["time"]),
                          "permalink": m["permalink"]} for m in items[:limit]]}


JPEG_SAMPLE = b"\xff\xd8\xff\xe0" + b"\x00" * 60  # starts like a JPEG: enough for a content check


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def check_image(data: bytes, *, formats: tuple[str, ...], min_ratio: float, max_ratio: float) -> None:
    """Instagram's checks on a fetched image (Threads passes its own limits)."""
    if len(data) > MAX_IMAGE:
        raise GraphFail(36000, "The image size is too large.", 2207004)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except Exception:  # noqa: BLE001 - Pillow raises several types for non-images
        raise GraphFail(36001, "The image format is not supported.", 2207005) from None
    if fmt not in formats:
        raise GraphFail(36001, f"The image format is not supported ({fmt}).", 2207005)
    ratio = w / h
    if not (min_ratio - 1e-3 <= ratio <= max_ratio + 1e-3):
        raise GraphFail(36003, f"The submitted image with aspect ratio ('{w}/{h}') cannot be published. Please "
                        "submit an image with a valid aspect ratio.", 2207009)


# --------------------------------------------------------------------------- Graph: Facebook + Instagram


class FakeGraph(MetaFake):
    """``graph.facebook.com``: Pages, their photo posts, linked Instagram accounts, debug_token."""

    def __init__(self, *, version: str = "v21.0", require_proof: bool = True):
        super().__init__(version=version, app_id=APP_ID, app_secret=APP_SECRET, require_proof=require_proof)
        self.pages: dict[str, dict] = {}
        self.ig_users: dict[str, dict] = {}
        self.posts: dict[str, dict] = {}          # post id -> record
        self.users: dict[str, list[str]] = {}     # FB user id -> Page ids

    def add_page(self, page_id: str, name: str, *, ig_id: str | None = None, ig_username: str = "",
                 tasks=("CREATE_CONTENT", "MANAGE"),
                 scopes=("pages_manage_posts", "pages_read_engagement", "pages_show_list",
                         "instagram_basic", "instagram_content_publish")) -> str:
        """A Page (and its linked IG account); returns a never-expiring Page token."""
        self.pages[page_id] = {"id": page_id, "name": name, "ig": ig_id, "tasks": list(tasks)}
        if ig_id:
            self.ig_users[ig_id] = {"id": ig_id, "username": ig_username or f"{name.lower()}.ig", "page": page_id}
        token = self.add_token("page", page_id, scopes)
        self.pages[page_id]["token"] = token
        return token

    def add_user(self, user_id: str, page_ids: list[str], scopes=("pages_show_list",)) -> str:
        self.users[user_id] = list(page_ids)
        return self.add_token("user", user_id, scopes, expires_in=60 * 86400)

    def page_posts(self, page_id: str) -> list[dict]:
        return sorted((p for p in self.posts.values() if p["page"] == page_id), key=lambda p: p["time"])

    # ------------------------------------------------------------------ routing

    def route(self, method, parts, params):
        if len(parts) == 1:
            if parts[0] == "debug_token" and method == "GET":
                return "debug_token", self._debug_token, ()
            if method == "GET":
                return "object", self._object, (parts[0],)
        if len(parts) == 2:
            oid, edge = parts
            table = {
                ("POST", "photos"): ("photos", self._upload_photo),
                ("GET", "photos"): ("list_photos", self._list_photos),
                ("GET", "posts"): ("list_posts", self._list_posts),
                ("GET", "published_posts"): ("list_posts", self._list_posts),
                ("GET", "feed"): ("list_posts", self._list_posts),
                ("GET", "accounts"): ("accounts", self._accounts),
                ("POST", "media"): ("media", self._create_container),
                ("GET", "media"): ("list_media", self._list_ig_media),
                ("POST", "media_publish"): ("media_publish", self._media_publish),
                ("GET", "content_publishing_limit"): ("content_publishing_limit", self._ig_limit),
            }
            if (method, edge) in table:
                name, fn = table[(method, edge)]
                return name, fn, (oid,)
        return "unknown", None, ()

    def _me(self, token: Token, oid: str) -> str:
        return token.subject if oid == "me" else oid

    def _page_token_for(self, token: Token, page_id: str, scope: str) -> None:
        if token.kind != "page" or token.subject != page_id:
            raise GraphFail(200, "(#200) The permission(s) pages_manage_posts are not available. It could be because "
                            "you are using a token that is not a Page token for this Page.", status=403)
        if scope not in token.scopes:
            raise GraphFail(200, f"(#200) Requires {scope} permission to manage the object", status=403)

    def _ig_token_for(self, token: Token, ig_id: str, scope: str = "instagram_content_publish") -> None:
        ig = self.ig_users.get(ig_id)
        if ig is None:
            raise GraphFail(100, f"Unsupported request. Object with ID '{ig_id}' does not exist", 33,
                            type_="GraphMethodException")
        if token.kind != "page" or token.subject != ig["page"]:
            raise GraphFail(10, "(#10) Application does not have permission for this action")
        if scope not in token.scopes:
            raise GraphFail(10, f"(#10) Application does not have permission for this action ({scope})")

    # ------------------------------------------------------------------ Facebook

    def _upload_photo(self, token, params, files, page_id):
        self._page_token_for(token, page_id, "pages_manage_posts")
        data = files.get("source")
        if data is None and params.get("url"):
            data, _ = self.fetch_image(params["url"])
        try:
            with Image.open(io.BytesIO(data or b"")) as im:
                im.verify()
        except Exception:  # noqa: BLE001
            raise GraphFail(324, "(#324) Requires upload file: missing or invalid image file") from None
        text = params.get("message", params.get("caption", ""))
        photo_id, n = self.new_id(), self.new_id()
        post_id = f"{page_id}_{n}"
        now = self.now()
        self.posts[post_id] = {"id": post_id, "page": page_id, "photo_id": photo_id, "message": text,
                               "alt_text": params.get("alt_text_custom", ""), "time": now,
                               "image_sha256": hashlib.sha256(data).hexdigest(), "image_size": image_size(data),
                               "permalink_url": f"https://www.facebook.com/{page_id}/posts/{n}"}
        return {"id": photo_id, "post_id": post_id}

    def _listing(self, params, rows, base_path):
        since = float(params["since"]) if params.get("since") else None
        limit = int(params.get("limit") or 25)
        offset = int(params.get("after") or 0)
        rows = [r for r in sorted(rows, key=lambda r: -r["time"]) if since is None or r["time"] >= since]
        page = rows[offset:offset + limit]
        out: dict = {"data": page, "paging": {"cursors": {"before": str(offset), "after": str(offset + limit)}}}
        if offset + limit < len(rows):
            q = {k: v for k, v in params.items() if k != "appsecret_proof"}
            q["after"] = str(offset + limit)
            out["paging"]["next"] = f"{self.url}/{self.version}/{base_path}?{urlencode(q)}"
        return out

    def _list_posts(self, token, params, files, page_id):
        page_id = self._me(token, page_id)
        self._page_token_for(token, page_id, "pages_read_engagement")
        rows = [{"id": p["id"], "message": p["message"], "created_time": _ts(p["time"]), "time": p["time"],
                 "permalink_url": p["permalink_url"]} for p in self.page_posts(page_id)]
        out = self._listing(params, rows, f"{page_id}/posts")
        for r in out["data"]:
            r.pop("time")
        return out

    def _list_photos(self, token, params, files, page_id):
        page_id = self._me(token, page_id)
        self._page_token_for(token, page_id, "pages_read_engagement")
        rows = [{"id": p["photo_id"], "name": p["message"], "created_time": _ts(p["time"]), "time": p["time"],
                 "page_story_id": p["id"], "link": p["permalink_url"]} for p in self.page_posts(page_id)]
        out = self._listing(params, rows, f"{page_id}/photos")
        for r in out["data"]:
            r.pop("time")
        return out

    def _object(self, token, params, files, oid):
        fields = set((params.get("fields") or "id").replace("{", ",").replace("}", ",").split(","))
        if oid == "me":
            if token.kind == "page":
                oid = token.subject
            elif token.kind == "user":
                return {"id": token.subject, "name": f"User {token.subject}"}
        if oid in self.pages:
            page = self.pages[oid]
            if token.kind == "page" and token.subject != oid:
                raise GraphFail(100, f"Unsupported get request. Object with ID '{oid}' does not exist", 33)
            out = {"id": oid, "name": page["name"]}
            if "instagram_business_account" in fields and page["ig"]:
                ig = self.ig_users[page["ig"]]
                out["instagram_business_account"] = {"id": ig["id"], "username": ig["username"]}
            return out
        if oid in self.posts:
            p = self.posts[oid]
            self._page_token_for(token, p["page"], "pages_read_engagement")
            return {"id": oid, "permalink_url": p["permalink_url"], "message": p["message"],
                    "created_time": _ts(p["time"])}
        if oid in self.containers:
            c = self.containers[oid]
            self._ig_token_for(token, c.owner, "instagram_basic")
            out = {"id": oid, "status_code": self.container_status(c)}
            if "status" in fields:
                out["status"] = (f"Error: {c.error or 'Media upload has failed with error code 2207001'}"
                                 if c.status == "ERROR" else c.status.capitalize())
            return out
        if oid in self.media:
            m = self.media[oid]
            self._ig_token_for(token, m["owner"], "instagram_basic")
            return {"id": oid, "permalink": m["permalink"], "caption": m["caption"], "timestamp": _ts(m["time"])}
        if oid in self.ig_users:
            self._ig_token_for(token, oid, "instagram_basic")
            return {"id": oid, "username": self.ig_users[oid]["username"]}
        raise GraphFail(100, f"Unsupported get request. Object with ID '{oid}' does not exist, cannot be loaded due "
                        "to missing permissions, or does not support this operation.", 33,
                        type_="GraphMethodException")

    def _accounts(self, token, params, files, uid):
        if token.kind != "user" or self._me(token, uid) != token.subject:
            raise GraphFail(100, "(#100) Tried accessing nonexisting field (accounts) on node type (Page)")
        rows = []
        for pid in self.users.get(token.subject, []):
            page = self.pages[pid]
            row = {"id": pid, "name": page["name"], "access_token": page["token"], "tasks": page["tasks"]}
            if "instagram_business_account" in (params.get("fields") or "") and page["ig"]:
                ig = self.ig_users[page["ig"]]
                row["instagram_business_account"] = {"id": ig["id"], "username": ig["username"]}
            rows.append({**row, "time": 0})
        out = self._listing(params, rows, "me/accounts")
        for r in out["data"]:
            r.pop("time")
        return out

    def _debug_token(self, token, params, files):
        if token.kind != "app":
            raise GraphFail(100, "(#100) You must provide an app access token, or a user access token that is an "
                            "owner or developer of the app")
        t = self.tokens.get(params.get("input_token", ""))
        if t is None:
            return {"data": {"is_valid": False, "error": {"code": 190, "message": "Invalid OAuth access token."}}}
        data = {"app_id": self.app_id, "type": t.kind.upper(), "application": "ai-poster",
                "expires_at": int(t.expires_at or 0), "is_valid": True, "issued_at": int(t.issued_at),
                "scopes": sorted(t.scopes), "user_id": t.subject if t.kind == "user" else "u-owner"}
        if t.kind == "page":
            data["profile_id"] = t.subject
        if t.revoked or (t.expires_at and t.expires_at <= self.now()):
            data["is_valid"] = False
            data["error"] = {"code": 190, "subcode": t.revoked or 463,
                             "message": "Error validating access token: The session has been invalidated."}
        return {"data": data}

    # ------------------------------------------------------------------ Instagram

    def _create_container(self, token, params, files, ig_id):
        self._ig_token_for(token, ig_id)
        if params.get("media_type") not in (None, "", "IMAGE"):
            raise GraphFail(100, "(#100) Only single images are supported by this fake", 2207023)
        if not params.get("image_url"):
            raise GraphFail(100, "(#100) The parameter image_url is required")
        caption = params.get("caption", "")
        if len(caption) > 2200 or caption.count("#") > 30:
            raise GraphFail(36004, "The caption is too long or has too many hashtags.", 2207010)
        if len(params.get("alt_text", "")) > 1000:
            raise GraphFail(100, "(#100) alt_text must be at most 1000 characters")
        data, ctype = self.fetch_image(params["image_url"])
        check_image(data, formats=("JPEG",), min_ratio=4 / 5, max_ratio=1.91)
        c = self.new_container(ig_id, "instagram", caption, params.get("alt_text", ""), data)
        return {"id": c.id}

    def _media_publish(self, token, params, files, ig_id):
        self._ig_token_for(token, ig_id)
        return self.publish_container(ig_id, params.get("creation_id", ""),
                                      lambda mid: f"https://www.instagram.com/p/C{mid[-10:]}/")

    def _ig_limit(self, token, params, files, ig_id):
        self._ig_token_for(token, ig_id, "instagram_basic")
        return self.limit(ig_id, params)

    def _list_ig_media(self, token, params, files, ig_id):
        self._ig_token_for(token, ig_id, "instagram_basic")
        return self.list_media(ig_id, params, "caption")


# --------------------------------------------------------------------------- Threads


class FakeThreads(MetaFake):
    """``graph.threads.net``: IMAGE containers, publish, quota, token refresh, ``/me``."""

    unversioned = {"refresh_access_token"}

    def __init__(self, *, version: str = "v1.0", require_proof: bool = False):
        super().__init__(version=version, app_id=THREADS_APP_ID, app_secret=THREADS_APP_SECRET,
                         require_proof=require_proof)
        self.users: dict[str, dict] = {}

    def add_user(self, user_id: str, username: str, *, age: float = 0.0, expires_in: float = 60 * 86400,
                 scopes=("threads_basic", "threads_content_publish")) -> str:
        self.users[user_id] = {"id": user_id, "username": username}
        self.quota_total.setdefault(user_id, 250)
        return self.add_token("threads", user_id, scopes, expires_in=expires_in, age=age)

    def route(self, method, parts, params):
        if parts == ["refresh_access_token"] and method == "GET":
            return "refresh_access_token", self._refresh, ()
        if len(parts) == 1 and method == "GET":
            return "object", self._object, (parts[0],)
        if len(parts) == 2:
            table = {("POST", "threads"): ("threads", self._create),
                     ("GET", "threads"): ("list_threads", self._list),
                     ("POST", "threads_publish"): ("threads_publish", self._publish),
                     ("GET", "threads_publishing_limit"): ("threads_publishing_limit", self._limit)}
            if (method, parts[1]) in table:
                name, fn = table[(method, parts[1])]
                return name, fn, (parts[0],)
        return "unknown", None, ()

    def _user(self, token: Token, uid: str, scope: str = "threads_basic") -> str:
        uid = token.subject if uid == "me" else uid
        if token.kind != "threads" or token.subject != uid or uid not in self.users:
            raise GraphFail(100, f"Unsupported request. Object with ID '{uid}' does not exist", 33,
                            type_="THApiException")
        if scope not in token.scopes:
            raise GraphFail(10, f"(#10) Application does not have permission for this action ({scope})")
        return uid

    def _refresh(self, token, params, files):
        if params.get("grant_type") != "th_refresh_token":
            raise GraphFail(100, "(#100) grant_type must be th_refresh_token")
        if token.kind != "threads":
            raise GraphFail(190, "Invalid OAuth access token - Cannot parse access token")
        if self.now() - token.issued_at < 86400:
            raise GraphFail(100, "(#100) The token cannot be refreshed until it is at least 24 hours old")  # [U]
        new = self.add_token("threads", token.subject, token.scopes, expires_in=60 * 86400)
        return {"access_token": new, "token_type": "bearer", "expires_in": 5183944}

    def _object(self, token, params, files, oid):
        if oid == "me" or oid in self.users:
            uid = self._user(token, oid)
            return {"id": uid, "username": self.users[uid]["username"]}
        if oid in self.containers:
            c = self.containers[oid]
            self._user(token, c.owner)
            out = {"id": oid, "status": self.container_status(c)}
            if c.status == "ERROR":
                out["error_message"] = c.error or "UNKNOWN"
            return out
        if oid in self.media:
            m = self.media[oid]
            self._user(token, m["owner"])
            return {"id": oid, "permalink": m["permalink"], "text": m["caption"], "timestamp": _ts(m["time"])}
        raise GraphFail(100, f"Unsupported get request. Object with ID '{oid}' does not exist", 33,
                        type_="THApiException")

    def _create(self, token, params, files, uid):
        uid = self._user(token, uid, "threads_content_publish")
        if params.get("media_type") != "IMAGE":
            raise GraphFail(100, "(#100) media_type must be IMAGE in this fake")
        text = params.get("text", "")
        if sum(len(ch.encode()) if ord(ch) >= 0x1F000 else 1 for ch in text) > 500:
            raise GraphFail(100, "(#100) Param text must be at most 500 characters long.")
        if not params.get("image_url"):
            raise GraphFail(100, "(#100) The parameter image_url is required")
        data, _ = self.fetch_image(params["image_url"])
        try:
            check_image(data, formats=("JPEG", "PNG"), min_ratio=1 / 10, max_ratio=10)
        except GraphFail as exc:
            if exc.code != 36003:
                raise
            c = self.new_container(uid, "threads", text, params.get("alt_text", ""), data)
            c.outcome, c.error = "ERROR", "INVALID_ASPEC_RATIO"   # Threads reports it on the container
            return {"id": c.id}
        c = self.new_container(uid, "threads", text, params.get("alt_text", ""), data)
        return {"id": c.id}

    def _publish(self, token, params, files, uid):
        uid = self._user(token, uid, "threads_content_publish")
        username = self.users[uid]["username"]
        return self.publish_container(uid, params.get("creation_id", ""),
                                      lambda mid: f"https://www.threads.net/@{username}/post/T{mid[-9:]}")

    def _limit(self, token, params, files, uid):
        return self.limit(self._user(token, uid), params)

    def _list(self, token, params, files, uid):
        return self.list_media(self._user(token, uid), params, "text")


# --------------------------------------------------------------------------- the daemon's public media route


class MediaServer:
    """Stands in for the API's signed media route: serves registered bytes at ``/m/<name>``. Modes
    script what a misconfigured proxy does (``challenge``: 200 text/html; ``forbidden``: 403 to crawlers;
    ``octet``: the image as application/octet-stream; ``login``: a redirect to an HTML login page)."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits: list[dict] = []
        self.mode = "ok"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                fake._serve(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                fake._serve(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, data: bytes, content_type: str = "image/jpeg") -> str:
        name = secrets.token_urlsafe(16)
        self.files[name] = (data, content_type)
        return f"{self.url}/m/{name}?sig={secrets.token_hex(8)}"

    def _serve(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        name = urlparse(h.path).path.removeprefix("/m/")
        ua = h.headers.get("User-Agent") or ""
        self.hits.append({"path": h.path, "user_agent": ua, "method": "HEAD" if head else "GET"})
        if self.mode == "challenge":
            status, data, ctype = 200, b"<html><body>Checking your browser...</body></html>", "text/html"
        elif self.mode == "forbidden" and "facebookexternalhit" in ua:
            status, data, ctype = 403, b"Forbidden", "text/plain"
        elif self.mode == "octet":
            status, data, ctype = 200, JPEG_SAMPLE, "application/octet-stream"
        elif self.mode == "login" and name != "/login":
            h.send_response(302)
            h.send_header("Location", "/login")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        elif self.mode == "login":
            status, data, ctype = 200, b"<html><form>Sign in</form></html>", "text/html; charset=utf-8"
        elif name in self.files:
            status, (data, ctype) = 200, self.files[name]
        else:
            status, data, ctype = 404, b"not found", "text/plain"
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)
