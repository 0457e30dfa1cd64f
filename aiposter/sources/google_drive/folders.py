"""Folder helpers for creating watches: read a pasted link, check the folder, list folders for a picker."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from aiposter.core.errors import SourceError
from aiposter.sources.google_drive.client import FOLDER_MIME, DriveClient, DriveFile, quote

_ID = re.compile(r"[A-Za-z0-9_-]{10,}")
FOLDER_CHECK_FIELDS = ("id,name,mimeType,trashed,driveId,parents,shortcutDetails(targetId,targetMimeType),"
                       "capabilities(canListChildren)")


class FolderLinkError(ValueError):
    """The text is not a Drive folder id or folder link; the message says what it is instead."""


def parse_folder_id(text: str) -> str:
    """A folder id from an id or a pasted Drive URL.

    Accepted: a bare id, ``root``, ``.../drive/folders/ID``, ``.../drive/u/0/folders/ID`` (any account
    number), ``.../drive/mobile/folders/ID``, ``...?id=ID`` (``open``, ``folderview``). Query parameters
    such as ``resourcekey``/``usp`` are ignored. A link to a file or a document says so.
    """
    raw = (text or "").strip()
    if not raw:
        raise FolderLinkError("give a Google Drive folder link or folder id")
    if raw == "root" or (_ID.fullmatch(raw) and "/" not in raw):
        return raw
    url = urlparse(raw if "://" in raw else "https://" + raw)
    host = (url.hostname or "").lower()
    if host not in ("drive.google.com", "docs.google.com"):
        raise FolderLinkError(f"{raw[:100]!r} is not a Google Drive link or folder id")
    parts = [p for p in url.path.split("/") if p]
    if "folders" in parts:
        i = parts.index("folders")
        if i + 1 < len(parts) and _ID.fullmatch(parts[i + 1]):
            return parts[i + 1]
    if parts and parts[-1] in ("open", "folderview") or (parts[:1] == ["drive"] and len(parts) <= 3):
        ids = parse_qs(url.query).get("id") or []
        if ids and _ID.fullmatch(ids[0]):
            return ids[0]
    if "file" in parts or (host == "docs.google.com" and "d" in parts):
        raise FolderLinkError("this is a link to a single file or document; paste the link of the folder that "
                              "holds the photos (open the folder in Drive and copy the address)")
    raise FolderLinkError(f"no folder id found in {raw[:100]!r}; paste a link like "
                          "https://drive.google.com/drive/folders/<id>")


@dataclass(frozen=True)
class FolderInfo:
    id: str
    name: str
    drive_id: str | None = None        # the shared drive it lives in; None for My Drive
    parents: tuple[str, ...] = ()


@dataclass
class FolderPage:
    folders: list[FolderInfo]
    shared_drives: list[FolderInfo] = field(default_factory=list)  # only on the first page of a root listing
    next_page_token: str | None = None


def check_folder(client: DriveClient, folder_id: str) -> FolderInfo:
    """The folder's name and drive, or a permanent :class:`SourceError` that says what is wrong.

    Codes: ``folder_not_found`` (deleted, or this account cannot see it), ``not_a_folder``,
    ``folder_trashed``, ``folder_unreadable``. A shortcut to a folder is followed once.
    """
    d = _get(client, folder_id)
    f = DriveFile.from_api(d)
    if f.is_shortcut and f.target_mime == FOLDER_MIME and f.target_id:
        d = _get(client, f.target_id)
        f = DriveFile.from_api(d)
    if not f.is_folder:
        raise SourceError(f"{f.name!r} is a file ({f.mime_type}), not a folder; give the folder that holds the "
                          "photos", permanent=True, code="not_a_folder")
    if f.trashed:
        raise SourceError(f"the Drive folder {f.name!r} is in the trash", permanent=True, code="folder_trashed")
    if (d.get("capabilities") or {}).get("canListChildren") is False:
        raise SourceError(f"this Google account may see the Drive folder {f.name!r} but not list what is in it",
                          permanent=True, code="folder_unreadable")
    return FolderInfo(f.id, f.name, f.drive_id, f.parents)


def _get(client: DriveClient, folder_id: str) -> dict:
    try:
        return client.get_raw(folder_id, FOLDER_CHECK_FIELDS, f"checking Drive folder {folder_id}")
    except SourceError as exc:
        if exc.code in ("not_found", "forbidden"):
            raise SourceError(f"Google Drive has no folder {folder_id}, or this Google account cannot open it "
                              "(was it deleted, or shared with another account?)", permanent=True,
                              code="folder_not_found") from exc
        raise


def list_folders(client: DriveClient, *, parent: str | None = None, query: str | None = None,
                 page_token: str | None = None, page_size: int = 100) -> FolderPage:
    """Folders for a picker: the children of ``parent`` (My Drive's top level and the shared drives when
    no parent is given), or those whose name contains ``query`` (anywhere, or under ``parent``)."""
    conds = [f"mimeType = {quote(FOLDER_MIME)}", "trashed = false"]
    if query:
        conds.append(f"name contains {quote(query)}")
    if parent or not query:
        conds.append(f"{quote(parent or 'root')} in parents")
    files, token = client.list_page(" and ".join(conds), all_drives=True, page_token=page_token,
                                    page_size=page_size, order_by="name",
                                    fields="id,name,mimeType,driveId,parents", what="listing Drive folders")
    drives: list[FolderInfo] = []
    if not parent and not page_token:
        listed, _ = client.list_drives(query=query, page_size=100)
        drives = [FolderInfo(d["id"], d["name"], d["id"]) for d in listed]
    return FolderPage([FolderInfo(f.id, f.name, f.drive_id, f.parents) for f in files], drives, token)
