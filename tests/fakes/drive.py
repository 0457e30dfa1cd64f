"""A strict loopback fake of Google Drive v3 and Google's OAuth endpoints, for the real client libraries.

google-api-python-client and google-auth talk to it unchanged: the client is built from its bundled
discovery document with ``client_options={"api_endpoint": fake.api_url}`` and credentials whose
``token_uri`` is :attr:`FakeDrive.token_uri`. Like Google, it:

* answers with the real JSON shapes, honours ``fields`` (validated against the discovery document's
  schemas: an unknown field is a 400, a field you did not ask for is not sent) and the default field
  sets when ``fields`` is absent;
* speaks the error envelope ``{"error": {"code", "message", "errors": [{"domain", "reason", "message",
  ...}], "status"}}`` for bad parameters, unknown or expired tokens, missing scopes, 404s, rate limits;
* keeps a change log with coalesced ``changes.list`` pages (``nextPageToken`` on every page but the last,
  ``newStartPageToken`` on the last), rejects unknown or expired page tokens, hides shared-drive items
  unless ``supportsAllDrives`` and ``includeItemsFromAllDrives`` are both set;
* parses the ``q`` subset the adapter uses (``'ID' in parents``, ``trashed``, ``mimeType``/``name``
  conditions, ``and``/``or``/``not``, parentheses) and refuses anything else with Google's 400;
* serves ``alt=media`` with ``Range`` support and refuses it without a download scope, for folders and
  for Google-native files (``fileNotDownloadable``);
* delivers push notifications for ``changes.watch`` channels to their address with the ``X-Goog-*``
  headers, and stops them with ``channels.stop``.

Tests mutate the drive with the helpers (:meth:`add_file`, :meth:`move`, :meth:`trash`, ...), inject
faults with :meth:`fail_next`, and read :attr:`counts` (requests per endpoint).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlparse

CLIENT_ID, CLIENT_SECRET = "drive-client.apps.googleusercontent.com", "drive-secret"
SCOPE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
SCOPE_METADATA = "https://www.googleapis.com/auth/drive.metadata.readonly"
METADATA_SCOPES = {SCOPE_READONLY, SCOPE_METADATA, "https://www.googleapis.com/auth/drive",
                   "https://www.googleapis.com/auth/drive.metadata"}
MEDIA_SCOPES = {SCOPE_READONLY, "https://www.googleapis.com/auth/drive"}
FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
GOOGLE_DOC = "application/vnd.google-apps.document"
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MAX_CHANNEL_TTL_MS = 604_800_000  # changes.watch channels live at most one week
DEFAULT_CHANNEL_TTL_MS = 3_600_000


def _discovery() -> dict:
    ref = resources.files("googleapiclient.discovery_cache") / "documents" / "drive.v3.json"
    return json.loads(ref.read_text())


SCHEMAS = _discovery()["schemas"]
DEFAULT_FILE_FIELDS = "kind,id,name,mimeType"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


class ApiError(Exception):
    """A Google error answer: raised anywhere in a handler, rendered as the v3 envelope."""

    def __init__(self, code: int, reason: str, message: str, *, domain: str = "global",
                 location: str | None = None, location_type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        err = {"message": message, "domain": domain, "reason": reason}
        if location:
            err["location"] = location
            err["locationType"] = location_type or "parameter"
        self.code, self.headers = code, headers or {}
        self.body = {"error": {"code": code, "message": message, "errors": [err],
                               "status": STATUS.get(code, "UNKNOWN")}}


def _invalid(param: str, message: str = "Invalid Value") -> ApiError:
    return ApiError(400, "invalid", message, location=param)


# --------------------------------------------------------------------------- partial responses (fields)


def parse_fields(text: str) -> dict:
    """``a,b(c,d),e/f`` -> {"a": None, "b": {"c": None, "d": None}, "e": {"f": None}}."""
    pos = 0

    def parse_list(stop: str | None) -> dict:
        nonlocal pos
        out: dict = {}
        while True:
            m = re.compile(r"\s*([A-Za-z_*][A-Za-z0-9_]*(?:/[A-Za-z_*][A-Za-z0-9_]*)*)\s*").match(text, pos)
            if not m:
                raise _invalid("fields", f"Invalid field selection {text[pos:] or text}")
            path, pos = m.group(1).split("/"), m.end()
            sub = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = parse_list(")")
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {}) or {}
            node[path[-1]] = sub if path[-1] not in node or node[path[-1]] is None else {**node[path[-1]],
                                                                                            **(sub or {})}
            if pos >= len(text):
                if stop:
                    raise _invalid("fields", f"Invalid field selection {text}")
                return out
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == stop:
                pos += 1
                return out
            raise _invalid("fields", f"Invalid field selection {text}")

    return parse_list(None)


def _validate_fields(tree: dict | None, schema: str) -> None:
    if tree is None:
        return
    props = SCHEMAS[schema]["properties"]
    for name, sub in tree.items():
        if name == "*":
            continue
        prop = props.get(name)
        if prop is None:
            raise _invalid("fields", f"Invalid field selection {name}")
        if sub is None:
            continue
        target = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
        if target:
            _validate_fields(sub, target)
        elif prop.get("type") == "object" and "properties" in prop:
            for key in sub:
                if key != "*" and key not in prop["properties"]:
                    raise _invalid("fields", f"Invalid field selection {key}")
        else:
            raise _invalid("fields", f"Invalid field selection {name}")


def apply_fields(obj, tree: dict | None):
    if tree is None or "*" in tree:
        return obj
    if isinstance(obj, list):
        return [apply_fields(x, tree) for x in obj]
    if not isinstance(obj, dict):
        return obj
    return {k: apply_fields(obj[k], sub) for k, sub in tree.items() if k in obj}


# --------------------------------------------------------------------------- the q language subset


_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|=|\(|\))|(?P<word>[A-Za-z_]+))")


def parse_q(q: str, aliases: dict | None = None):
    """A predicate over an item dict for the ``q`` subset; anything else is Google's 400 on ``q``."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN.match(q, pos)
        if not m:
            raise _invalid("q")
        pos = m.end()
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        tokens.append((kind, val))
    i = 0

    def peek(kind=None, val=None):
        if i >= len(tokens):
            return False
        k, v = tokens[i]
        return (kind is None or k == kind) and (val is None or v.lower() == val)

    def take(kind=None, val=None):
        nonlocal i
        if not peek(kind, val):
            raise _invalid("q")
        i += 1
        return tokens[i - 1][1]

    def expr():
        left = term()
        while peek("word", "or"):
            take()
            right = term()
            left = (lambda a, b: lambda f: a(f) or b(f))(left, right)
        return left

    def term():
        left = factor()
        while peek("word", "and"):
            take()
            right = factor()
            left = (lambda a, b: lambda f: a(f) and b(f))(left, right)
        return left

    def factor():
        if peek("word", "not"):
            take()
            inner = factor()
            return lambda f: not inner(f)
        if peek("op", "("):
            take()
            inner = expr()
            take("op", ")")
            return inner
        if peek("str"):
            value = take("str")
            take("word", "in")
            take("word", "parents")
            value = (aliases or {}).get(value, value)
            return lambda f: value in f["parents"]
        name = take("word")
        if name == "trashed":
            op = take("op")
            b = take("word")
            if op not in ("=", "!=") or b not in ("true", "false"):
                raise _invalid("q")
            want = (b == "true") == (op == "=")
            return lambda f: f["trashed"] == want
        if name not in ("mimeType", "name"):
            raise _invalid("q")
        if peek("word", "contains"):
            take()
            value = take("str")
            if name == "name":  # Drive matches name prefixes of words, case-insensitively; close enough
                return lambda f: value.lower() in f["name"].lower()
            return lambda f: value in f[name]
        op = take("op")
        value = take("str")
        if op == "=":
            return lambda f: f[name] == value
        if op == "!=":
            return lambda f: f[name] != value
        raise _invalid("q")

    if not tokens:
        return lambda f: True
    pred = expr()
    if i != len(tokens):
        raise _invalid("q")
    return pred


# --------------------------------------------------------------------------- state


_MD5: dict[int, tuple[bytes, str]] = {}


def _md5(content: bytes) -> str:
    hit = _MD5.get(id(content))
    if hit is None or hit[0] is not content:
        hit = _MD5[id(content)] = (content, hashlib.md5(content).hexdigest())
    return hit[1]


@dataclass
class Item:
    id: str
    name: str
    mime: str
    parents: list[str]
    created: float
    modified: float
    content: bytes | None = None
    description: str = ""
    trashed: bool = False
    explicitly_trashed: bool = False
    drive_id: str | None = None
    shortcut_target: str | None = None
    shortcut_target_mime: str | None = None
    can_list_children: bool = True
    version: int = 1
    visible: bool = True  # False once the user lost access
    reported_size: int | None = None     # a metadata ``size`` that differs from the bytes served (fault)
    served_content: bytes | None = None  # bytes served by alt=media instead of the content (fault)

    def to_json(self) -> dict:
        j = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime,
             "parents": list(self.parents), "trashed": self.trashed, "explicitlyTrashed": self.explicitly_trashed,
             "createdTime": _rfc3339(self.created), "modifiedTime": _rfc3339(self.modified),
             "version": str(self.version), "starred": False, "spaces": ["drive"],
             "capabilities": {"canListChildren": self.can_list_children and self.mime == FOLDER,
                              "canDownload": True}}
        if self.description:
            j["description"] = self.description
        if self.content is not None:
            j["md5Checksum"] = _md5(self.content)
            j["size"] = str(len(self.content) if self.reported_size is None else self.reported_size)
            j["headRevisionId"] = f"rev{self.version}"
            if "." in self.name:
                j["fileExtension"] = self.name.rsplit(".", 1)[1]
        if self.drive_id:
            j["driveId"] = self.drive_id
        if self.shortcut_target:
            j["shortcutDetails"] = {"targetId": self.shortcut_target, "targetMimeType": self.shortcut_target_mime}
        return j


@dataclass
class Fault:
    status: int = 500
    reason: str = "backendError"
    message: str = "Internal Error"
    domain: str = "global"
    retry_after: str | None = None
    hang: float = 0.0  # seconds to stall before answering (longer than the client's timeout: a timeout)
    body: bytes | None = None  # a raw body instead of the envelope (e.g. an HTML error page)
    after: int = 0             # let this many requests through first


@dataclass
class Hold:
    """A request stalled until the test releases it (``arrived`` is set when it comes in)."""

    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class Channel:
    id: str
    resource_id: str
    token: str | None
    address: str
    expiration_ms: int
    page_token: str
    stopped: bool = False
    message_number: int = 0


@dataclass
class Delivery:
    channel_id: str
    state: str
    status: int | None
    headers: dict = field(default_factory=dict)


class FakeDrive:
    """One Google account's Drive, plus Google's OAuth token, revoke and authorize steps."""

    def __init__(self, *, allow_http_push: bool = True):
        self.lock = threading.RLock()
        self.items: dict[str, Item] = {}
        self.drives: dict[str, dict] = {}   # shared drives: id -> {"name", "member"}
        self.log: list[dict] = []           # change log: {"seq", "key", "time"}
        self.oldest_valid_token = 1
        self.access: dict[str, dict] = {}   # access token -> {"refresh", "scopes", "expires"}
        self.refresh: dict[str, dict] = {}  # refresh token -> {"scopes", "revoked"}
        self.codes: dict[str, dict] = {}
        self.channels: dict[str, Channel] = {}
        self.deliveries: list[Delivery] = []
        self.counts: Counter[str] = Counter()
        self.faults: dict[str, deque[Fault]] = {}
        self.holds: dict[str, deque[Hold]] = {}
        self.allow_http_push = allow_http_push
        self.revoked: list[str] = []
        self._clock = time.time()
        self._push_wakeup = threading.Condition()
        self._push_pending: set[str] = set()
        self._pushing = False
        self._closing = threading.Event()
        self.root_id = self._new_id("0A")
        self.items[self.root_id] = Item(self.root_id, "My Drive", FOLDER, [], self._tick(), self._tick())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16              # one write per response (no Nagle/delayed-ACK stalls)
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._dispatch(self, "GET")

            def do_POST(self):
                fake._dispatch(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api_url = f"{self.url}/drive/v3/"
        self.token_uri = f"{self.url}/token"
        self.revoke_uri = f"{self.url}/revoke"
        self.auth_uri = f"{self.url}/o/oauth2/auth"
        self._threads = [threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True),
                         threading.Thread(target=self._push_loop, daemon=True)]
        for t in self._threads:
            t.start()

    def close(self):
        self._closing.set()
        with self._push_wakeup:
            self._push_wakeup.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ tokens and OAuth

    def issue_tokens(self, scopes=(SCOPE_READONLY,), expires_in: int = 3599) -> dict:
        """The secrets a finished OAuth dance would have stored (skips the browser step)."""
        refresh = "1//" + secrets.token_urlsafe(24)
        self.refresh[refresh] = {"scopes": list(scopes), "revoked": False}
        token = self._access_token(refresh, expires_in)
        return {"token": token, "refresh_token": refresh, "token_uri": self.token_uri, "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "scopes": list(scopes),
                "expiry": datetime.fromtimestamp(self.access[token]["expires"], UTC).isoformat()}

    def _access_token(self, refresh: str, expires_in: int = 3599) -> str:
        token = "ya29." + secrets.token_urlsafe(24)
        self.access[token] = {"refresh": refresh, "scopes": self.refresh[refresh]["scopes"],
                              "expires": time.time() + expires_in}
        return token

    def expire_access_tokens(self):
        with self.lock:
            for a in self.access.values():
                a["expires"] = time.time() - 1

    def revoke_refresh_tokens(self):
        """The user removed the app's access in their Google account (refresh -> invalid_grant)."""
        with self.lock:
            for r in self.refresh.values():
                r["revoked"] = True
            self.access.clear()

    def approve(self, authorize_url: str) -> tuple[str, str]:
        """(code, state) for a user who consents on Google's page."""
        q = {k: v[0] for k, v in parse_qs(urlparse(authorize_url).query).items()}
        code = "4/" + secrets.token_urlsafe(16)
        self.codes[code] = q
        return code, q.get("state", "")

    # ------------------------------------------------------------------ mutating the drive

    def _new_id(self, prefix: str = "1") -> str:
        return prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")[:31]

    def _tick(self) -> float:
        self._clock = max(self._clock + 0.001, time.time())
        return self._clock

    def _change(self, key: tuple[str, str]):
        self.log.append({"seq": len(self.log) + 1, "key": key, "time": self._tick()})
        with self._push_wakeup:
            self._push_pending.update(c.id for c in self.channels.values() if not c.stopped)
            self._push_wakeup.notify_all()

    def _add(self, name, mime, parent, *, content=None, description="", shortcut=None, age: float = 0.0) -> str:
        with self.lock:
            parent = self._resolve(parent)
            p = self.items[parent]
            now = self._tick()
            item = Item(self._new_id(), name, mime, [parent], now - age, now - age, content=content,
                        description=description,
                        drive_id=p.drive_id or (parent if parent in self.drives else None))
            if shortcut:
                item.shortcut_target, item.shortcut_target_mime = shortcut, self.items[shortcut].mime
            self.items[item.id] = item
            self._change(("file", item.id))
            return item.id

    def _resolve(self, fid: str) -> str:
        return self.root_id if fid == "root" else fid

    def add_folder(self, name: str, parent: str = "root") -> str:
        return self._add(name, FOLDER, parent)

    def add_file(self, name: str, parent: str = "root", content: bytes = b"\xff\xd8\xff\xe0fake-jpeg",
                 mime: str = "image/jpeg", description: str = "", age: float = 0.0) -> str:
        """Create or upload a file (``age``: seconds since it was created, for an old photo)."""
        return self._add(name, mime, parent, content=content, description=description, age=age)

    def add_files(self, parent: str, n: int, mime: str = "image/jpeg") -> list[str]:
        """Many files at once, without a push notification per file (a bulk upload)."""
        ids = []
        with self.lock:
            parent = self._resolve(parent)
            drive_id = self.items[parent].drive_id or (parent if parent in self.drives else None)
            for k in range(n):
                now = self._tick()
                item = Item(self._new_id(), f"img{k:05d}.jpg", mime, [parent], now, now,
                            content=b"img%05d" % k, drive_id=drive_id)
                self.items[item.id] = item
                self.log.append({"seq": len(self.log) + 1, "key": ("file", item.id), "time": now})
                ids.append(item.id)
        return ids

    def add_native(self, name: str, parent: str = "root", mime: str = GOOGLE_DOC) -> str:
        """A Google Docs/Sheets/... file: no binary content, no md5Checksum, not downloadable."""
        return self._add(name, mime, parent)

    def add_shortcut(self, target: str, parent: str = "root", name: str | None = None) -> str:
        return self._add(name or self.items[target].name, SHORTCUT, parent, shortcut=target)

    def copy(self, file_id: str, parent: str) -> str:
        src = self.items[file_id]
        return self._add(f"Copy of {src.name}", src.mime, parent, content=src.content, description=src.description)

    def _touch(self, file_id: str, **changes):
        with self.lock:
            item = self.items[file_id]
            for k, v in changes.items():
                setattr(item, k, v)
            item.modified = self._tick()
            item.version += 1
            self._change(("file", file_id))

    def move(self, file_id: str, new_parent: str):
        new_parent = self._resolve(new_parent)
        p = self.items[new_parent]
        self._touch(file_id, parents=[new_parent], drive_id=p.drive_id or (new_parent if new_parent in self.drives
                                                                             else None))

    def rename(self, file_id: str, name: str):
        self._touch(file_id, name=name)

    def set_description(self, file_id: str, text: str):
        self._touch(file_id, description=text)

    def set_content(self, file_id: str, content: bytes):
        """A new revision (new md5Checksum), same file id."""
        self._touch(file_id, content=content)

    def reupload_same(self, file_id: str):
        """A new revision with the same bytes: modifiedTime and version change, md5Checksum does not."""
        self._touch(file_id, content=self.items[file_id].content)

    def trash(self, file_id: str):
        with self.lock:
            self._touch(file_id, trashed=True, explicitly_trashed=True)
            for d in self._descendants(file_id):  # children of a trashed folder are trashed implicitly
                self._touch(d, trashed=True)

    def untrash(self, file_id: str):
        with self.lock:
            self._touch(file_id, trashed=False, explicitly_trashed=False)
            for d in self._descendants(file_id):
                self._touch(d, trashed=False)

    def delete(self, file_id: str):
        """Permanent deletion: a ``removed`` change, and a 404 from then on."""
        with self.lock:
            for d in [file_id, *self._descendants(file_id)]:
                self.items.pop(d, None)
                self._change(("file", d))

    def unshare(self, file_id: str):
        """The user lost access to a file or folder (and everything under it)."""
        with self.lock:
            for d in [file_id, *self._descendants(file_id)]:
                self.items[d].visible = False
                self._change(("file", d))

    def restrict_listing(self, folder_id: str):
        """The folder is visible but its children cannot be listed (capabilities.canListChildren false)."""
        self._touch(folder_id, can_list_children=False)

    def misreport_size(self, file_id: str, size: int):
        """Metadata says ``size`` while the real bytes are longer (tests the cap while streaming)."""
        self.items[file_id].reported_size = size

    def corrupt_media(self, file_id: str, data: bytes):
        """alt=media serves ``data``, which does not match the md5Checksum in the metadata."""
        self.items[file_id].served_content = data

    def add_shared_drive(self, name: str) -> str:
        with self.lock:
            did = self._new_id("0A")
            self.drives[did] = {"name": name, "member": True, "created": self._tick()}
            now = self._tick()
            self.items[did] = Item(did, name, FOLDER, [], now, now, drive_id=did)
            self._change(("drive", did))
            return did

    def leave_shared_drive(self, drive_id: str):
        with self.lock:
            self.drives[drive_id]["member"] = False
            self._change(("drive", drive_id))
            for item in list(self.items.values()):
                if item.drive_id == drive_id and item.id != drive_id:
                    item.visible = False
                    self._change(("file", item.id))

    def expire_page_tokens(self):
        """Every page token handed out so far is now rejected (as after a long outage)."""
        with self.lock:
            self.log.append({"seq": len(self.log) + 1, "key": ("noop", ""), "time": self._tick()})
            self.oldest_valid_token = len(self.log) + 1

    def _descendants(self, folder_id: str) -> list[str]:
        out, todo = [], [folder_id]
        while todo:
            cur = todo.pop()
            for item in self.items.values():
                if cur in item.parents:
                    out.append(item.id)
                    todo.append(item.id)
        return out

    # ------------------------------------------------------------------ faults and counters

    def fail_next(self, endpoint: str, status: int = 500, reason: str | None = None, *, times: int = 1,
                  message: str | None = None, retry_after: str | None = None, hang: float = 0.0,
                  domain: str | None = None, body: bytes | None = None, after: int = 0):
        """The next ``times`` requests to ``endpoint`` (e.g. ``changes.list``, ``files.get_media``, ``token``)
        fail like Google does."""
        reason = reason or {403: "userRateLimitExceeded", 429: "rateLimitExceeded", 401: "authError",
                            404: "notFound", 503: "backendError"}.get(status, "backendError")
        message = message or {"userRateLimitExceeded": "User rate limit exceeded.",
                              "rateLimitExceeded": "Rate Limit Exceeded"}.get(reason, "Internal Error"
                                                                              if status >= 500 else reason)
        if domain is None:
            domain = "usageLimits" if "RateLimit" in reason or reason == "rateLimitExceeded" else "global"
        self.faults.setdefault(endpoint, deque()).extend(
            Fault(status, reason, message, domain, retry_after, hang, body, after if k == 0 else 0)
            for k in range(times))

    def hold_next(self, endpoint: str) -> Hold:
        """Stall the next request to ``endpoint`` until ``hold.release`` is set (a slow answer, on cue)."""
        hold = Hold()
        with self.lock:
            self.holds.setdefault(endpoint, deque()).append(hold)
        return hold

    def reset_counts(self):
        self.counts.clear()

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ HTTP plumbing

    ROUTES = [
        ("GET", re.compile(r"^/drive/v3/files$"), "files.list"),
        ("GET", re.compile(r"^/drive/v3/files/(?P<id>[^/]+)$"), "files.get"),
        ("GET", re.compile(r"^/drive/v3/changes/startPageToken$"), "changes.getStartPageToken"),
        ("GET", re.compile(r"^/drive/v3/changes$"), "changes.list"),
        ("POST", re.compile(r"^/drive/v3/changes/watch$"), "changes.watch"),
        ("POST", re.compile(r"^/drive/v3/channels/stop$"), "channels.stop"),
        ("GET", re.compile(r"^/drive/v3/drives$"), "drives.list"),
        ("GET", re.compile(r"^/drive/v3/about$"), "about.get"),
        ("POST", re.compile(r"^/token$"), "token"),
        ("POST", re.compile(r"^/revoke$"), "revoke"),
    ]

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str):
        u = urlparse(h.path)
        params = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        status, payload, headers = 404, {"error": {"code": 404, "message": "Not Found", "errors": [
            {"message": "Not Found", "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}}, {}
        for m, rx, name in self.ROUTES:
            match = rx.match(u.path)
            if m != method or not match:
                continue
            if name == "files.get" and params.get("alt") == "media":
                name = "files.get_media"
            with self.lock:
                self.counts[name] += 1
                queue = self.faults.get(name)
                fault = None
                if queue and queue[0].after > 0:
                    queue[0].after -= 1
                elif queue:
                    fault = queue.popleft()
                hold = self.holds[name].popleft() if self.holds.get(name) else None
            if hold is not None:
                hold.arrived.set()
                hold.release.wait(30)
            try:
                if fault:
                    self._raise_fault(fault)
                status, payload, headers = getattr(self, "_ep_" + name.replace(".", "_"))(
                    h, params, body, **match.groupdict())
            except ApiError as e:
                status, payload, headers = e.code, e.body, e.headers
            break
        if isinstance(payload, bytes):
            data, ctype = payload, headers.pop("Content-Type", "application/octet-stream")
        elif payload is None:
            data, ctype = b"", None
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=UTF-8"
        try:
            h.send_response(status)
            if ctype:
                h.send_header("Content-Type", ctype)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    def _raise_fault(self, f: Fault):
        if f.hang:
            self._closing.wait(f.hang)
        err = ApiError(f.status, f.reason, f.message, domain=f.domain,
                       headers={"Retry-After": f.retry_after} if f.retry_after else None)
        if f.body is not None:
            err.body = f.body
            err.headers["Content-Type"] = "text/html; charset=UTF-8"
        raise err

    def _auth(self, h, media: bool = False) -> dict:
        auth = h.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise ApiError(401, "required", "Request is missing required authentication credential. Expected "
                           "OAuth 2 access token, login cookie or other valid authentication credential.",
                           location="Authorization", location_type="header",
                           headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        with self.lock:
            a = self.access.get(auth[7:])
        if a is None or a["expires"] <= time.time():
            raise ApiError(401, "authError", "Invalid Credentials", location="Authorization",
                           location_type="header",
                           headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                                        'error="invalid_token"'})
        if not METADATA_SCOPES & set(a["scopes"]) or (media and not MEDIA_SCOPES & set(a["scopes"])):
            raise ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
        return a

    @staticmethod
    def _bool(params: dict, name: str, default: bool = False) -> bool:
        v = params.get(name)
        if v is None:
            return default
        if v not in ("true", "false"):
            raise _invalid(name, f"Invalid value at '{name}' (TYPE_BOOL), \"{v}\"")
        return v == "true"

    @staticmethod
    def _int(params: dict, name: str, default: int, lo: int, hi: int) -> int:
        v = params.get(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise _invalid(name, f"Invalid value at '{name}' (TYPE_INT32), \"{v}\"") from None
        if not lo <= n <= hi:
            raise _invalid(name, f"Invalid value '{n}'. Values must be within the range: [{lo}, {hi}]")
        return n

    def _fields(self, params: dict, schema: str) -> dict | None:
        text = params.get("fields")
        if text is None:
            return None
        tree = parse_fields(text)
        _validate_fields(tree, schema)
        return tree

    def _all_drives(self, params: dict) -> bool:
        include = self._bool(params, "includeItemsFromAllDrives")
        supports = self._bool(params, "supportsAllDrives")
        if include and not supports:
            raise ApiError(403, "invalidParameter",
                           "The includeItemsFromAllDrives parameter can only be set to true when "
                           "supportsAllDrives is also set to true.", location="includeItemsFromAllDrives")
        return include

    def _visible(self, item: Item | None, supports_all_drives: bool) -> bool:
        if item is None or not item.visible:
            return False
        if item.drive_id:
            d = self.drives.get(item.drive_id)
            return supports_all_drives and bool(d and d["member"])
        return True

    def _get_item(self, fid: str, params: dict) -> Item:
        item = self.items.get(self._resolve(fid))
        if not self._visible(item, self._bool(params, "supportsAllDrives")):
            raise ApiError(404, "notFound", f"File not found: {fid}.", location="fileId")
        return item

    # ------------------------------------------------------------------ Drive endpoints

    def _ep_files_get(self, h, params, body, id):
        self._auth(h)
        with self.lock:
            item = self._get_item(id, params)
            j = item.to_json()
        tree = self._fields(params, "File")
        return 200, apply_fields(j, tree if tree is not None else parse_fields(DEFAULT_FILE_FIELDS)), {}

    def _ep_files_get_media(self, h, params, body, id):
        self._auth(h, media=True)
        with self.lock:
            item = self._get_item(id, params)
            content, mime = item.content, item.mime
            if item.served_content is not None:
                content = item.served_content
        if content is None:
            raise ApiError(403, "fileNotDownloadable", "Only files with binary content can be downloaded. Use "
                           "Export with Docs Editors files.", location="alt")
        total = len(content)
        rng = h.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m:
                return 200, content, {"Content-Type": mime}
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else total - 1, total - 1)
            if start >= total:
                return 416, b"", {"Content-Range": f"bytes */{total}", "Content-Type": "text/plain"}
            return 206, content[start:end + 1], {"Content-Type": mime,
                                                 "Content-Range": f"bytes {start}-{end}/{total}"}
        return 200, content, {"Content-Type": mime}

    def _page_token(self, kind: str, offset: int, query: str) -> str:
        raw = f"{kind}:{offset}:{hashlib.sha1(query.encode()).hexdigest()[:12]}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _read_page_token(self, token: str | None, kind: str, query: str) -> int:
        if not token:
            return 0
        try:
            k, off, digest = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split(":")
            if k == kind and digest == hashlib.sha1(query.encode()).hexdigest()[:12]:
                return int(off)
        except (ValueError, UnicodeDecodeError):
            pass
        raise _invalid("pageToken")

    def _ep_files_list(self, h, params, body):
        self._auth(h)
        include = self._all_drives(params)
        supports = self._bool(params, "supportsAllDrives")
        corpora = params.get("corpora", "user")
        drive_id = params.get("driveId")
        if corpora not in ("user", "drive", "allDrives", "domain"):
            raise _invalid("corpora")
        if corpora == "drive" and not drive_id:
            raise ApiError(400, "invalidParameter", "The driveId parameter must be specified if and only if "
                           "corpora is set to drive.", location="driveId")
        if drive_id and corpora != "drive":
            raise ApiError(400, "invalidParameter", "The driveId parameter must be specified if and only if "
                           "corpora is set to drive.", location="driveId")
        if corpora in ("drive", "allDrives") and not include:
            raise ApiError(403, "invalidParameter",
                           "includeItemsFromAllDrives must be true when corpora is drive or allDrives.",
                           location="includeItemsFromAllDrives")
        size = self._int(params, "pageSize", 100, 1, 1000)
        pred = parse_q(params.get("q", ""), {"root": self.root_id})
        tree = self._fields(params, "FileList")
        query = json.dumps([params.get(k) for k in ("q", "corpora", "driveId", "orderBy")])
        offset = self._read_page_token(params.get("pageToken"), "files", query)
        with self.lock:
            rows = []
            for item in self.items.values():
                if item.id == self.root_id or item.id in self.drives or not item.visible:
                    continue
                if item.drive_id:
                    if corpora == "user" or not self._visible(item, supports and include):
                        continue
                    if corpora == "drive" and item.drive_id != drive_id:
                        continue
                elif corpora == "drive":
                    continue
                if pred({"parents": item.parents, "trashed": item.trashed, "mimeType": item.mime,
                         "name": item.name}):
                    rows.append(item)
            rows.sort(key=lambda i: (i.name.lower(), i.id) if params.get("orderBy", "").startswith("name")
                      else (i.created, i.id))
            page = [i.to_json() for i in rows[offset:offset + size]]
        out = {"kind": "drive#fileList", "incompleteSearch": False, "files": page}
        if offset + size < len(rows):
            out["nextPageToken"] = self._page_token("files", offset + size, query)
        if tree is None:
            tree = {"kind": None, "nextPageToken": None, "incompleteSearch": None,
                    "files": parse_fields(DEFAULT_FILE_FIELDS)}
        return 200, apply_fields(out, tree), {}

    def _ep_changes_getStartPageToken(self, h, params, body):
        self._auth(h)
        tree = self._fields(params, "StartPageToken")
        with self.lock:
            token = str(len(self.log) + 1)
        return 200, apply_fields({"kind": "drive#startPageToken", "startPageToken": token}, tree), {}

    def _check_change_token(self, params) -> int:
        token = params.get("pageToken")
        if token is None:
            raise ApiError(400, "required", "Required parameter: pageToken", location="pageToken")
        if not token.isdigit() or not self.oldest_valid_token <= int(token) <= len(self.log) + 1:
            raise _invalid("pageToken")
        return int(token)

    def _ep_changes_list(self, h, params, body):
        self._auth(h)
        include = self._all_drives(params)
        supports = self._bool(params, "supportsAllDrives")
        include_removed = self._bool(params, "includeRemoved", True)
        restrict = self._bool(params, "restrictToMyDrive")
        size = self._int(params, "pageSize", 100, 1, 1000)
        tree = self._fields(params, "ChangeList")
        with self.lock:
            start = self._check_change_token(params)
            last: dict = {}
            for entry in self.log[start - 1:]:
                last[entry["key"]] = entry
            entries = sorted(last.values(), key=lambda e: e["seq"])
            changes, next_seq = [], None
            for e in entries:
                if len(changes) >= size:
                    next_seq = e["seq"]
                    break
                c = self._render_change(e, include and supports, include_removed, restrict)
                if c is not None:
                    changes.append(c)
            out = {"kind": "drive#changeList", "changes": changes}
            if next_seq is not None:
                out["nextPageToken"] = str(next_seq)
            else:
                out["newStartPageToken"] = str(len(self.log) + 1)
        if tree is None:
            tree = {"kind": None, "nextPageToken": None, "newStartPageToken": None,
                    "changes": {"kind": None, "changeType": None, "time": None, "removed": None, "fileId": None,
                                "driveId": None, "file": parse_fields(DEFAULT_FILE_FIELDS),
                                "drive": {"kind": None, "id": None, "name": None}}}
        return 200, apply_fields(out, tree), {}

    def _render_change(self, e: dict, all_drives: bool, include_removed: bool, restrict: bool) -> dict | None:
        kind, key = e["key"]
        base = {"kind": "drive#change", "time": _rfc3339(e["time"])}
        if kind == "noop":
            return None
        if kind == "drive":
            d = self.drives[key]
            if not all_drives or restrict:
                return None
            if not d["member"]:
                return {**base, "changeType": "drive", "removed": True, "driveId": key} if include_removed else None
            return {**base, "changeType": "drive", "removed": False, "driveId": key,
                    "drive": {"kind": "drive#drive", "id": key, "name": d["name"]}}
        item = self.items.get(key)
        if item is not None and item.drive_id and (not all_drives or restrict):
            return None
        if item is None or not self._visible(item, all_drives):
            if not include_removed:
                return None
            c = {**base, "changeType": "file", "removed": True, "fileId": key}
            if item is not None and item.drive_id:
                c["driveId"] = item.drive_id
            return c
        c = {**base, "changeType": "file", "removed": False, "fileId": key, "file": item.to_json()}
        if item.drive_id:
            c["driveId"] = item.drive_id
        return c

    def _ep_changes_watch(self, h, params, body):
        self._auth(h)
        self._all_drives(params)
        with self.lock:
            start = self._check_change_token(params)
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            raise ApiError(400, "parseError", "Parse Error") from None
        if not req.get("id"):
            raise ApiError(400, "required", "Required", location="resource.id")
        if req.get("type") not in ("web_hook", "webhook"):
            raise ApiError(400, "invalid", f"Invalid value for: {req.get('type')} is not a valid value",
                           location="resource.type")
        address = req.get("address") or ""
        if not address.startswith("https://") and not (self.allow_http_push and address.startswith("http://")):
            raise ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}",
                           domain="push")
        now_ms = int(time.time() * 1000)
        requested = int(req["expiration"]) if req.get("expiration") else now_ms + DEFAULT_CHANNEL_TTL_MS
        expiration = min(requested, now_ms + MAX_CHANNEL_TTL_MS)
        with self.lock:
            if req["id"] in self.channels:
                raise ApiError(400, "channelIdNotUnique", f"Channel id {req['id']} not unique", domain="push")
            ch = Channel(req["id"], "R" + secrets.token_hex(10), req.get("token"), address, expiration, str(start))
            self.channels[ch.id] = ch
        with self._push_wakeup:
            self._push_pending.add("sync:" + ch.id)
            self._push_wakeup.notify_all()
        out = {"kind": "api#channel", "id": ch.id, "resourceId": ch.resource_id,
               "resourceUri": f"{self.api_url}changes?alt=json&pageToken={start}", "expiration": str(expiration)}
        if ch.token is not None:
            out["token"] = ch.token
        return 200, out, {}

    def _ep_channels_stop(self, h, params, body):
        self._auth(h)
        req = json.loads(body or b"{}")
        with self.lock:
            ch = self.channels.get(req.get("id", ""))
            if ch is None or ch.stopped or ch.resource_id != req.get("resourceId"):
                raise ApiError(404, "notFound", f"Channel '{req.get('id')}' not found for project '1234'",
                               domain="push")
            ch.stopped = True
        return 204, None, {}

    def _ep_drives_list(self, h, params, body):
        self._auth(h)
        size = self._int(params, "pageSize", 10, 1, 100)
        q = params.get("q", "")
        m = re.fullmatch(r"\s*name\s+contains\s+'((?:[^'\\]|\\.)*)'\s*", q) if q else None
        if q and not m:
            raise _invalid("q")
        needle = re.sub(r"\\(.)", r"\1", m.group(1)).lower() if m else ""
        tree = self._fields(params, "DriveList")
        offset = self._read_page_token(params.get("pageToken"), "drives", q)
        with self.lock:
            rows = [{"kind": "drive#drive", "id": did, "name": d["name"], "createdTime": _rfc3339(d["created"])}
                    for did, d in self.drives.items() if d["member"] and needle in d["name"].lower()]
        out = {"kind": "drive#driveList", "drives": rows[offset:offset + size]}
        if offset + size < len(rows):
            out["nextPageToken"] = self._page_token("drives", offset + size, q)
        return 200, apply_fields(out, tree), {}

    def _ep_about_get(self, h, params, body):
        self._auth(h)
        if "fields" not in params:
            raise ApiError(400, "required", "The 'fields' parameter is required for this method.",
                           location="fields")
        tree = self._fields(params, "About")
        return 200, apply_fields({"kind": "drive#about", "user": {
            "kind": "drive#user", "displayName": "Ann", "emailAddress": "ann@gmail.example",
            "permissionId": "04485315648946186537", "me": True}}, tree), {}

    # ------------------------------------------------------------------ OAuth endpoints

    def _form(self, h, body: bytes) -> dict:
        if not (h.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            raise _OAuthError(400, "invalid_request", "Invalid Content-Type")
        return {k: v[-1] for k, v in parse_qs(body.decode()).items()}

    def _ep_token(self, h, params, body):
        try:
            return self._token(h, body)
        except _OAuthError as e:
            return e.status, {"error": e.error, "error_description": e.description}, {}

    def _token(self, h, body):
        p = self._form(h, body)
        basic = (h.headers.get("Authorization") or "").removeprefix("Basic ")
        if basic:  # client_secret_basic, as requests-oauthlib sends it
            p["client_id"], _, p["client_secret"] = base64.b64decode(basic).decode().partition(":")
        if p.get("client_id") != CLIENT_ID or p.get("client_secret") != CLIENT_SECRET:
            raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
        grant = p.get("grant_type")
        with self.lock:
            if grant == "refresh_token":
                r = self.refresh.get(p.get("refresh_token", ""))
                if r is None or r["revoked"]:
                    raise _OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
                token = self._access_token(p["refresh_token"])
                return 200, {"access_token": token, "expires_in": 3599, "scope": " ".join(r["scopes"]),
                             "token_type": "Bearer"}, {}
            if grant != "authorization_code":
                raise _OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
            req = self.codes.pop(p.get("code", ""), None)
            if req is None:
                raise _OAuthError(400, "invalid_grant", "Malformed auth code.")
            if req.get("redirect_uri") != p.get("redirect_uri"):
                raise _OAuthError(400, "redirect_uri_mismatch", "Bad Request")
            if req.get("code_challenge"):
                verifier = p.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if req.get("code_challenge_method") != "S256" or req["code_challenge"] != challenge:
                    raise _OAuthError(400, "invalid_grant", "Invalid code verifier.")
            scopes = (req.get("scope") or SCOPE_READONLY).split()
            refresh = "1//" + secrets.token_urlsafe(24)
            self.refresh[refresh] = {"scopes": scopes, "revoked": False}
            token = self._access_token(refresh)
        return 200, {"access_token": token, "expires_in": 3599, "refresh_token": refresh,
                     "scope": " ".join(scopes), "token_type": "Bearer"}, {}

    def _ep_revoke(self, h, params, body):
        token = params.get("token")
        if token is None:
            try:
                token = self._form(h, body).get("token")
            except _OAuthError as e:
                return e.status, {"error": e.error, "error_description": e.description}, {}
        with self.lock:
            self.revoked.append(token or "")
            if token in self.refresh and not self.refresh[token]["revoked"]:
                self.refresh[token]["revoked"] = True
                for t, a in list(self.access.items()):
                    if a["refresh"] == token:
                        del self.access[t]
                return 200, {}, {}
            if token in self.access:
                self.refresh[self.access[token]["refresh"]]["revoked"] = True
                del self.access[token]
                return 200, {}, {}
        return 400, {"error": "invalid_token", "error_description": "Token expired or revoked"}, {}

    # ------------------------------------------------------------------ push delivery

    def _push_loop(self):
        while not self._closing.is_set():
            with self._push_wakeup:
                while not self._push_pending and not self._closing.is_set():
                    self._push_wakeup.wait()
                pending, self._push_pending = self._push_pending, set()
                self._pushing = True
            self._deliver(pending)
            with self._push_wakeup:
                self._pushing = False

    def push_idle(self) -> bool:
        """No notification waiting or being delivered (every change so far has been pushed)."""
        with self._push_wakeup:
            return not self._push_pending and not self._pushing

    def _deliver(self, pending: set[str]):
        for key in sorted(pending, key=lambda k: (not k.startswith("sync:"), k)):  # sync first, as Google
            state, _, cid = key.rpartition(":")
            with self.lock:
                ch = self.channels.get(cid)
                if ch is None or ch.stopped or ch.expiration_ms <= time.time() * 1000:
                    continue
                ch.message_number += 1
                headers = {"X-Goog-Channel-ID": ch.id, "X-Goog-Channel-Expiration": formatdate(
                    ch.expiration_ms / 1000, usegmt=True), "X-Goog-Resource-ID": ch.resource_id,
                    "X-Goog-Resource-URI": f"{self.api_url}changes?alt=json&pageToken={ch.page_token}",
                    "X-Goog-Resource-State": state or "change", "X-Goog-Message-Number": str(ch.message_number)}
                if ch.token is not None:
                    headers["X-Goog-Channel-Token"] = ch.token
                address = ch.address
            status = None
            try:
                req = urllib.request.Request(address, data=b"", method="POST", headers=headers)
                with urllib.request.urlopen(req, timeout=5) as resp:
                    status = resp.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = None
            with self.lock:
                self.deliveries.append(Delivery(cid, state or "change", status, headers))


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
