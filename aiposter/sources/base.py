"""The source port: list a folder's files, fetch one file's bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class WatchRef:
    """What a source needs to know about a watch (kept free of ORM objects)."""

    id: int
    user_id: int
    folder: str
    connection_id: int | None = None
    cursor: str | None = None


@dataclass
class RemoteFile:
    ref: str                 # stable identity within the watch: relative path, or a Drive file id
    name: str
    size: int | None
    arrived_at: datetime     # when the file came into the folder (for maximum_age and ordering)
    fingerprint: str = ""    # content identity (md5, or size+mtime)
    mime_type: str = ""
    description: str = ""
    ready: bool = True       # False while the file is still being written


@dataclass
class Listing:
    files: list[RemoteFile]
    cursor: str | None = None          # opaque resume state, stored on the watch
    folder_name: str = ""
    removed: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str

    def list(self, watch: WatchRef) -> Listing:
        """Everything new or changed since ``watch.cursor`` (a full listing when the source has no feed)."""

    def fetch(self, watch: WatchRef, ref: str, dest: Path, max_bytes: int) -> None:
        """Write the file's bytes to ``dest``. Raise ImageError past ``max_bytes``; SourceError otherwise."""
