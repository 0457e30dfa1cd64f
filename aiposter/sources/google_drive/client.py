"""A thin Drive v3 client on google-api-python-client: plain values in, plain dataclasses out.

* **Threads.** httplib2 is not thread-safe, so each thread that uses a :class:`DriveClient` gets its own
  ``httplib2.Http`` + ``AuthorizedHttp`` + service object (a ``threading.local``). The credentials are
  shared: a token refreshed by one thread is adopted by the others before their next request.
* **URLs.** Every Google URL comes from :class:`DriveSettings` (phase 2 fills it from ``[oauth.google]``).
  The service is built from the client's *bundled* discovery document (``static_discovery=True``: no
  discovery request, no network at build time) with ``client_options={"api_endpoint": api_url}``, which
  replaces ``rootUrl + servicePath`` for every method, so a fake or a proxy can stand in. The endpoint
  must end with ``/`` (the library joins method paths with ``urljoin``); :class:`DriveSettings`
  normalises it.
* **Tokens.** google-auth refreshes an expired access token inside ``AuthorizedHttp`` (before the request
  when the stored expiry says so, or after a 401) and retries. Each refresh is reported through
  ``on_refresh(secrets)`` so the caller can save the new token encrypted; the Google access-token expiry
  is *not* a connection expiry (the refresh token is what lasts).
* **No hidden retries.** Requests run with ``num_retries=0``: a 429/5xx/timeout surfaces at once as a
  transient :class:`SourceError` with ``retry_after``, and the backoff is decided by the caller for the
  whole connection (a pause shared by replicas), not by a sleeping worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import google.oauth2.credentials
import google_auth_httplib2
import httplib2
from googleapiclient.discovery import build
from googleapiclient.http import MediaIoBaseDownload

from aiposter.core import image_types
from aiposter.core.errors import ImageError, SourceError
from aiposter.sources.google_drive import errors

log = logging.getLogger(__name__)

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
NATIVE_PREFIX = "application/vnd.google-apps."
DEFAULT_IMAGE_TYPES = image_types.DEFAULT  # JPEG, PNG, WebP, HEIC/HEIF; a watch may choose others
FILE_FIELDS = ("id,name,mimeType,md5Checksum,size,createdTime,modifiedTime,parents,description,trashed,driveId,"
               "shortcutDetails(targetId,targetMimeType)")
CHANGE_FIELDS = (f"nextPageToken,newStartPageToken,changes(changeType,time,removed,fileId,driveId,"
                 f"file({FILE_FIELDS}))")


@dataclass(frozen=True)
class DriveSettings:
    """Endpoints and limits; phase 2 builds this from ``[oauth.google]`` and the source config."""

    api_url: str = "https://www.googleapis.com/drive/v3/"
    token_uri: str = "https://oauth2.googleapis.com/token"
    revoke_uri: str = "https://oauth2.googleapis.com/revoke"
    client_id: str = ""
    client_secret: str = ""
    timeout_seconds: float = 30.0
    page_size: int = 1000                      # files.list / changes.list page size (Drive's maximum)
    max_change_pages: int = 50                 # per poll; the rest is read by the next poll
    download_chunk_bytes: int = 8 * 1024 * 1024  # Range requests of this size bound memory per download

    def __post_init__(self):
        object.__setattr__(self, "api_url", self.api_url.rstrip("/") + "/")


@dataclass(frozen=True)
class DriveFile:
    """One Drive item, as far as the poller cares."""

    id: str
    name: str
    mime_type: str
    parents: tuple[str, ...] = ()
    md5: str | None = None
    size: int | None = None
    created_time: datetime | None = None
    modified_time: datetime | None = None
    description: str = ""
    trashed: bool = False
    drive_id: str | None = None
    target_id: str | None = None        # for a shortcut: the file it points to
    target_mime: str | None = None      # for a shortcut: the target's type when the shortcut was made

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    @property
    def is_shortcut(self) -> bool:
        return self.mime_type == SHORTCUT_MIME

    @property
    def is_native(self) -> bool:
        """A Google Docs/Sheets/... file (or a folder): metadata only, nothing to download."""
        return self.mime_type.startswith(NATIVE_PREFIX) and not self.is_shortcut

    @property
    def content_id(self) -> str:
        """The id whose bytes to download: the target for a shortcut, the file itself otherwise."""
        return self.target_id or self.id

    @classmethod
    def from_api(cls, d: Mapping) -> DriveFile:
        sc = d.get("shortcutDetails") or {}
        size = d.get("size")
        return cls(id=str(d["id"]), name=str(d.get("name") or ""), mime_type=str(d.get("mimeType") or ""),
                   parents=tuple(d.get("parents") or ()), md5=d.get("md5Checksum") or None,
                   size=int(size) if size not in (None, "") else None,
                   created_time=parse_time(d.get("createdTime")), modified_time=parse_time(d.get("modifiedTime")),
                   description=str(d.get("description") or ""), trashed=bool(d.get("trashed")),
                   drive_id=d.get("driveId") or None, target_id=sc.get("targetId") or None,
                   target_mime=sc.get("targetMimeType") or None)


@dataclass(frozen=True)
class Change:
    """One entry of ``changes.list``: a file (or a shared drive) whose state changed."""

    file_id: str | None
    time: datetime | None
    removed: bool
    file: DriveFile | None = None
    change_type: str = "file"       # "file" or "drive"
    drive_id: str | None = None


@dataclass
class ChangeBatch:
    changes: list[Change]
    new_token: str                  # store this and pass it to the next read
    complete: bool = True           # False: more changes wait (max_change_pages reached); poll again soon
    requests: int = 0


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    md5: str
    mime_type: str
    name: str


def parse_time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class _Credentials(google.oauth2.credentials.Credentials):
    """google-auth user credentials that tell their owner after every refresh."""

    def refresh(self, request):
        super().refresh(request)
        owner = getattr(self, "_aiposter_owner", None)
        if owner is not None:
            owner._refreshed(self)


@dataclass
class _Local:
    creds: _Credentials
    service: object


class DriveClient:
    """One Drive connection's API surface. Safe to share between threads (see the module docstring)."""

    def __init__(self, credentials: Mapping, settings: DriveSettings | None = None, *,
                 on_refresh: Callable[[dict], None] | None = None):
        self.settings = settings or DriveSettings()
        secrets = dict(credentials)
        if not secrets.get("refresh_token") and not secrets.get("token"):
            raise SourceError("this Drive connection has no stored token; reconnect it", permanent=True,
                              code="auth")
        self._secrets = secrets
        self._lock = threading.Lock()
        self._local = threading.local()
        self._on_refresh = on_refresh
        self.refresh_count = 0
        self.request_count = 0

    # ------------------------------------------------------------------ credentials

    @property
    def secrets(self) -> dict:
        """The current secrets, with the latest refreshed access token and expiry."""
        with self._lock:
            return dict(self._secrets)

    def _make_credentials(self) -> _Credentials:
        s, st = self._secrets, self.settings
        expiry = parse_time(s.get("expiry"))
        creds = _Credentials(
            token=s.get("token"), refresh_token=s.get("refresh_token"),
            token_uri=st.token_uri or s.get("token_uri"),
            client_id=s.get("client_id") or st.client_id, client_secret=s.get("client_secret") or st.client_secret,
            expiry=expiry.astimezone(UTC).replace(tzinfo=None) if expiry else None)
        creds._aiposter_owner = self
        return creds

    def _refreshed(self, creds: _Credentials) -> None:
        expiry = creds.expiry.replace(tzinfo=UTC).isoformat() if creds.expiry else None
        with self._lock:
            self._secrets["token"] = creds.token
            self._secrets["expiry"] = expiry
            if creds.refresh_token:
                self._secrets["refresh_token"] = creds.refresh_token
            self.refresh_count += 1
            snapshot = dict(self._secrets)
        if self._on_refresh is not None:
            try:
                self._on_refresh(snapshot)
            except Exception:  # noqa: BLE001 - the fresh token still works in memory; the next refresh saves
                log.warning("saving the refreshed Drive token failed", exc_info=True)

    def _state(self) -> _Local:
        state: _Local | None = getattr(self._local, "state", None)
        with self._lock:
            if state is None:
                creds = self._make_credentials()
                http = google_auth_httplib2.AuthorizedHttp(
                    creds, http=httplib2.Http(timeout=self.settings.timeout_seconds))
                service = build("drive", "v3", http=http, static_discovery=True, cache_discovery=False,
                                client_options={"api_endpoint": self.settings.api_url})
                state = _Local(creds, service)
                self._local.state = state
            elif state.creds.token != self._secrets.get("token"):  # another thread refreshed: adopt its token
                fresh = self._make_credentials()
                state.creds.token, state.creds.expiry = fresh.token, fresh.expiry
        return state

    def _service(self):
        return self._state().service

    def _execute(self, request, what: str):
        self.request_count += 1
        try:
            return request.execute(num_retries=0)
        except Exception as exc:  # noqa: BLE001 - mapped to SourceError; unknown types re-raised by the mapper
            raise errors.from_exception(exc, what) from exc

    def close(self) -> None:
        state = getattr(self._local, "state", None)
        if state is not None:
            state.service.close()
            self._local.state = None

    # ------------------------------------------------------------------ change feed

    def start_page_token(self, drive_id: str | None = None) -> str:
        kw = {"driveId": drive_id} if drive_id else {}
        body = self._execute(self._service().changes().getStartPageToken(supportsAllDrives=True, **kw),
                             "reading the start of the change feed")
        token = body.get("startPageToken")
        if not token:
            raise SourceError("Google Drive answered without a start page token", code="server_error")
        return str(token)

    def read_changes(self, token: str, *, max_pages: int | None = None) -> ChangeBatch:
        """Every change since ``token``, following ``nextPageToken`` until ``newStartPageToken``.

        An idle account costs one request. Stops after ``max_pages`` (the returned token is then the next
        page's, and ``complete`` is False) so one huge backlog cannot hold a worker for minutes.
        """
        max_pages = max_pages or self.settings.max_change_pages
        changes: list[Change] = []
        svc = self._service()
        for n in range(1, max_pages + 1):
            page = self._execute(svc.changes().list(
                pageToken=token, pageSize=self.settings.page_size, includeRemoved=True, supportsAllDrives=True,
                includeItemsFromAllDrives=True, spaces="drive", fields=CHANGE_FIELDS), "reading the change feed")
            for c in page.get("changes") or []:
                changes.append(Change(
                    file_id=c.get("fileId"), time=parse_time(c.get("time")), removed=bool(c.get("removed")),
                    file=DriveFile.from_api(c["file"]) if c.get("file") and not c.get("removed") else None,
                    change_type=c.get("changeType") or "file", drive_id=c.get("driveId")))
            if page.get("newStartPageToken"):
                return ChangeBatch(changes, str(page["newStartPageToken"]), True, n)
            if not page.get("nextPageToken"):
                raise SourceError("Google Drive's change list had neither nextPageToken nor newStartPageToken",
                                  code="server_error")
            token = str(page["nextPageToken"])
        return ChangeBatch(changes, token, False, max_pages)

    # ------------------------------------------------------------------ files

    def get_file(self, file_id: str, what: str | None = None, fields: str = FILE_FIELDS) -> DriveFile:
        return DriveFile.from_api(self.get_raw(file_id, fields, what))

    def get_raw(self, file_id: str, fields: str, what: str | None = None) -> dict:
        return self._execute(self._service().files().get(fileId=file_id, supportsAllDrives=True, fields=fields),
                             what or f"reading file {file_id}")

    def list_page(self, q: str, *, drive_id: str | None = None, page_token: str | None = None,
                  page_size: int | None = None, order_by: str | None = None, all_drives: bool = False,
                  fields: str = FILE_FIELDS, what: str = "listing a folder") -> tuple[list[DriveFile], str | None]:
        """One ``files.list`` page. Corpora: the shared drive when known (cheapest), else My Drive
        (``user``), or every drive for searches (``all_drives``)."""
        kw: dict = {"corpora": "drive", "driveId": drive_id} if drive_id else {
            "corpora": "allDrives" if all_drives else "user"}
        if page_token:
            kw["pageToken"] = page_token
        if order_by:
            kw["orderBy"] = order_by
        body = self._execute(self._service().files().list(
            q=q, pageSize=page_size or self.settings.page_size, supportsAllDrives=True,
            includeItemsFromAllDrives=True, fields=f"nextPageToken,files({fields})", **kw), what)
        return [DriveFile.from_api(f) for f in body.get("files") or []], body.get("nextPageToken")

    def iter_files(self, q: str, *, drive_id: str | None = None, what: str = "listing a folder",
                   all_drives: bool = False) -> Iterator[list[DriveFile]]:
        """Every page of a ``files.list`` query (pages may be empty before the end: keep going)."""
        token = None
        while True:
            files, token = self.list_page(q, drive_id=drive_id, page_token=token, what=what, all_drives=all_drives)
            yield files
            if not token:
                return

    def list_drives(self, *, query: str | None = None, page_token: str | None = None,
                    page_size: int = 100) -> tuple[list[dict], str | None]:
        kw: dict = {"pageSize": page_size, "fields": "nextPageToken,drives(id,name)"}
        if query:
            kw["q"] = f"name contains {quote(query)}"
        if page_token:
            kw["pageToken"] = page_token
        body = self._execute(self._service().drives().list(**kw), "listing shared drives")
        return [{"id": d["id"], "name": d.get("name", "")} for d in body.get("drives") or []], body.get(
            "nextPageToken")

    # ------------------------------------------------------------------ download

    def download(self, file_id: str, dest: Path, max_bytes: int, *, name: str | None = None) -> Downloaded:
        """Stream a file's bytes to ``dest`` (via ``dest.part``), checking size and ``md5Checksum``.

        Fresh metadata first: a file trashed or deleted since it was queued is reported as such
        (``trashed``/``not_found``, permanent) instead of being posted; the size cap applies before any
        byte is fetched and again while streaming (Range requests of ``download_chunk_bytes``, so memory
        stays bounded even if the metadata lied). A partial file never survives an error.
        """
        what = f"downloading {name or file_id}"
        meta = self.get_file(file_id, what)
        if meta.is_shortcut and meta.target_id:
            meta = self.get_file(meta.target_id, what)
        if meta.trashed:
            raise SourceError(f"{meta.name} was moved to the trash in Google Drive", permanent=True, code="trashed")
        if meta.is_native or meta.size is None:
            raise SourceError(f"{meta.name} is a {meta.mime_type} item, not a file with image content",
                              permanent=True, code="not_downloadable")
        if meta.size > max_bytes:
            raise ImageError(f"the file is {meta.size / 1048576:.1f} MB, over the {max_bytes / 1048576:.1f} MB "
                             "limit (images.max_file_bytes)", code="too_large")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        request = self._service().files().get_media(fileId=meta.id, supportsAllDrives=True)
        try:
            with open(part, "wb") as fh:
                sink = _CappedWriter(fh, max_bytes)
                downloader = MediaIoBaseDownload(sink, request, chunksize=self.settings.download_chunk_bytes)
                done = False
                while not done:
                    self.request_count += 1
                    try:
                        _, done = downloader.next_chunk(num_retries=0)
                    except (ImageError, SourceError):
                        raise
                    except Exception as exc:  # noqa: BLE001
                        raise errors.from_exception(exc, what) from exc
            if sink.size != meta.size:
                raise SourceError(f"{what}: got {sink.size} bytes, Drive said {meta.size}", code="server_error")
            digest = sink.md5.hexdigest()
            if meta.md5 and digest != meta.md5:
                raise SourceError(f"{what}: the bytes do not match Drive's md5Checksum (changed while "
                                  "downloading?)", code="checksum")
            part.replace(dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return Downloaded(dest, sink.size, digest, meta.mime_type, meta.name)

    # ------------------------------------------------------------------ push channels

    def watch_changes(self, page_token: str, address: str, channel_id: str, channel_token: str,
                      expiration_ms: int | None = None) -> dict:
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": channel_token}
        if expiration_ms:
            body["expiration"] = str(expiration_ms)
        return self._execute(self._service().changes().watch(
            pageToken=page_token, supportsAllDrives=True, includeItemsFromAllDrives=True, includeRemoved=True,
            body=body), "subscribing to Drive push notifications")

    def stop_channel(self, channel_id: str, resource_id: str) -> bool:
        """Stop a push channel; False if Google no longer knew it (expired or already stopped)."""
        try:
            self._execute(self._service().channels().stop(body={"id": channel_id, "resourceId": resource_id}),
                          "stopping a Drive push channel")
        except SourceError as exc:
            if exc.code == "not_found":
                return False
            raise
        return True


class _CappedWriter:
    """The file object MediaIoBaseDownload writes to: hashes, counts, and stops past the cap."""

    def __init__(self, fh, max_bytes: int):
        self.fh, self.max_bytes, self.size, self.md5 = fh, max_bytes, 0, hashlib.md5()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise ImageError(f"the file grew past the {self.max_bytes / 1048576:.1f} MB limit while downloading "
                             "(images.max_file_bytes)", code="too_large")
        self.md5.update(data)
        return self.fh.write(data)


def quote(value: str) -> str:
    """A string literal for Drive's query language (backslash-escape ``\\`` and ``'``)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class RevokeResult:
    ok: bool
    message: str = ""


def revoke_token(token: str, revoke_uri: str = "https://oauth2.googleapis.com/revoke", *,
                 timeout_seconds: float = 10.0) -> RevokeResult:
    """Ask Google to revoke a token (best effort, never raises). Revoking the refresh token also revokes
    its access tokens; Google answers 400 ``invalid_token`` for one already revoked, which is fine."""
    try:
        resp, content = httplib2.Http(timeout=timeout_seconds).request(
            revoke_uri, "POST", body=urlencode({"token": token}),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
    except Exception as exc:  # noqa: BLE001 - best effort: report, never raise
        return RevokeResult(False, f"cannot reach Google to revoke the token: {str(exc)[:200] or type(exc).__name__}")
    if resp.status == 200:
        return RevokeResult(True)
    text = content.decode("utf-8", "replace")[:200]
    if resp.status == 400 and "invalid_token" in text:
        return RevokeResult(True, "the token was already revoked or expired")
    return RevokeResult(False, f"Google answered HTTP {resp.status} to the revocation: {text}")


