"""The ``local`` source: a directory on this machine (the embedded stand-in for a Drive folder).

A file counts once it has settled: nothing has written to it for ``watch_defaults.settle_seconds`` and
its size did not change since the last poll. Hidden files and common partial-download names are
ignored. The arrival time is the later of mtime and ctime, so a file *moved* into the folder (which
keeps its old mtime) is dated when it arrived, not when it was taken.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from aiposter.config import Config
from aiposter.core.errors import ImageError, SourceError
from aiposter.core.ports import Listing, RemoteFile, WatchRef

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~", ".swp")


class LocalSource:
    name = "local"

    def __init__(self, cfg: Config):
        self.settle_seconds = cfg.watch_defaults.settle_seconds

    def list(self, watch: WatchRef) -> Listing:
        root = Path(watch.folder)
        if not root.is_dir():
            raise SourceError(f"folder {root} does not exist or is not a directory", code="missing_folder")
        now = time.time()
        files: list[RemoteFile] = []
        try:
            entries = list(os.scandir(root))
        except OSError as exc:
            raise SourceError(f"cannot list folder {root}: {exc.strerror}", code="unreadable") from None
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between listing and stat
            changed = max(st.st_mtime, st.st_ctime)
            files.append(RemoteFile(
                ref=name,
                name=name,
                size=st.st_size,
                arrived_at=datetime.fromtimestamp(changed, UTC),
                fingerprint=f"{st.st_size}:{st.st_mtime_ns}",
                ready=(now - changed) >= self.settle_seconds,
            ))
        return Listing(files=files, folder_name=root.resolve().name)

    def fetch(self, watch: WatchRef, ref: str, dest: Path, max_bytes: int) -> None:
        src = Path(watch.folder) / ref
        try:
            size = src.stat().st_size
        except FileNotFoundError:
            raise SourceError(f"{ref} is no longer in the folder", permanent=True, code="gone") from None
        except OSError as exc:
            raise SourceError(f"cannot read {ref}: {exc.strerror}", code="unreadable") from None
        if size > max_bytes:
            raise ImageError(f"the file is {size / 1048576:.1f} MB, over the {max_bytes / 1048576:.1f} MB "
                             "limit (images.max_file_bytes)", code="too_large")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1024 * 1024)
        except OSError as exc:
            raise SourceError(f"cannot read {ref}: {exc.strerror}", code="unreadable") from None


def build(deps) -> LocalSource:
    return LocalSource(deps.cfg)


def validate_folder(cfg: Config, folder: str, allow_any_folder: bool) -> str:
    """A local watch's folder: an existing directory, under ``sources.local_roots`` unless an admin (the
    CLI) sets it. Returned resolved, as it is stored."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"folder {path} does not exist or is not a directory")
    roots = [Path(r).expanduser().resolve() for r in cfg.sources.local_roots]
    if not allow_any_folder and not any(path.is_relative_to(r) for r in roots):
        raise ValueError("local folders are limited to the operator's sources.local_roots")
    return str(path)
