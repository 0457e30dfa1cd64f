"""The ``local`` source: a directory on this machine (the embedded stand-in for a Drive folder).

A file counts once it has settled: nothing has written to it for ``watch_defaults.settle_seconds`` and
its size did not change since the last poll. Hidden files and common partial-download names are
ignored. The arrival time is the later of mtime and ctime, so a file *moved* into the folder (which
keeps its old mtime) is dated when it arrived, not when it was taken.

Users choose folders, so every path is treated as hostile. The folder is opened one component at a time
from ``/`` with ``O_NOFOLLOW`` (a symlink anywhere on the way, put there after the watch was checked,
stops the poll instead of being followed); files are opened by name inside that directory with
``O_NOFOLLOW | O_NONBLOCK`` (a symlink is refused, a FIFO cannot block a worker), must be regular files,
and are copied with ``images.max_file_bytes`` enforced on the bytes actually read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aiposter.config import Config
from aiposter.core.errors import ImageError, SourceError
from aiposter.core.ports import Listing, RemoteFile, WatchRef

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~", ".swp")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1024 * 1024


@contextmanager
def open_folder(folder: str) -> Iterator[int]:
    """A directory descriptor for ``folder``, reached without following any symlink.

    ``folder`` is the absolute, symlink-free path stored on the watch (resolved when it was checked
    against the allowed roots). If any component has since become a symlink (or is not a directory),
    this raises SourceError(code="escaped"): the watch would otherwise read wherever the link points."""
    path = Path(folder)
    if not path.is_absolute():
        raise SourceError(f"folder {folder} is not an absolute path", permanent=True, code="escaped")
    fd = os.open("/", _DIR_FLAGS)
    try:
        walked = Path("/")
        for part in path.parts[1:]:
            walked = walked / part
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise SourceError(f"folder {folder} does not exist or is not a directory",
                                  code="missing_folder") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(walked):
                    raise SourceError(f"folder {folder} is no longer the folder that was checked: {walked} is "
                                      "a symbolic link now, and the watch does not follow it", permanent=True,
                                      code="escaped") from None
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise SourceError(f"folder {folder} does not exist or is not a directory",
                                      code="missing_folder") from None
                raise SourceError(f"cannot open folder {folder}: {exc.strerror}", code="unreadable") from None
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def _file_name(ref: str) -> str:
    """A ref of the local source is a plain file name inside the folder, never a path."""
    if not ref or "/" in ref or "\x00" in ref or ref in (".", ".."):
        raise SourceError(f"{ref!r} is not a file name in the folder", permanent=True, code="gone")
    return ref


class LocalSource:
    name = "local"

    def __init__(self, cfg: Config):
        self.settle_seconds = cfg.watch_defaults.settle_seconds

    def list(self, watch: WatchRef) -> Listing:
        now = time.time()
        files: list[RemoteFile] = []
        with open_folder(watch.folder) as dfd:
            try:
                entries = list(os.scandir(dfd))
            except OSError as exc:
                raise SourceError(f"cannot list folder {watch.folder}: {exc.strerror}", code="unreadable") from None
            # stat() of an entry from a descriptor's listing goes through that descriptor: inside the with.
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
                    # Which file, and which version of it: a new photo saved under an old name (a new inode,
                    # or new bytes written in place) is a new version of the ref.
                    fingerprint=f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}",
                    ready=(now - changed) >= self.settle_seconds,
                ))
        return Listing(files=files, folder_name=Path(watch.folder).name)

    def fetch(self, watch: WatchRef, ref: str, dest: Path, max_bytes: int) -> None:
        name = _file_name(ref)
        too_large = (f"the file is over the {max_bytes / 1048576:.1f} MB limit (images.max_file_bytes)")
        with open_folder(watch.folder) as dfd:
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                raise SourceError(f"{ref} is no longer in the folder", permanent=True, code="gone") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise SourceError(f"{ref} is a symbolic link; only regular files are posted",
                                      permanent=True, code="not_regular") from None
                raise SourceError(f"cannot read {ref}: {exc.strerror}", code="unreadable") from None
        with os.fdopen(fd, "rb", buffering=0) as fin:
            st = os.fstat(fin.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(f"{ref} is not a regular file (a FIFO, device or socket); it is not read",
                                  permanent=True, code="not_regular")
            if st.st_size > max_bytes:
                raise ImageError(f"the file is {st.st_size / 1048576:.1f} MB, over the "
                                 f"{max_bytes / 1048576:.1f} MB limit (images.max_file_bytes)", code="too_large")
            dest.parent.mkdir(parents=True, exist_ok=True)
            copied = 0
            try:
                with open(dest, "wb") as fout:
                    while chunk := fin.read(CHUNK):
                        copied += len(chunk)
                        if copied > max_bytes:  # the file grew after fstat: the cap is on what is read
                            raise ImageError(too_large, code="too_large")
                        fout.write(chunk)
            except ImageError:
                dest.unlink(missing_ok=True)
                raise
            except OSError as exc:
                dest.unlink(missing_ok=True)
                raise SourceError(f"cannot read {ref}: {exc.strerror}", code="unreadable") from None


def build(deps) -> LocalSource:
    return LocalSource(deps.cfg)


# An email goes into a path only if it is one plain path component ("a/../../etc@x" is a valid address).
SAFE_EMAIL_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")


def local_roots(cfg: Config, user) -> list[Path]:
    """The folders under which ``user`` may watch local folders: ``sources.local_roots`` with
    ``{user_id}`` and ``{email}`` filled in for this user (every configured root names one of them, so no
    root is shared between users). The one rule for the API, the CLI and every poll."""
    roots = []
    for template in cfg.sources.local_roots:
        if "{email}" in template and not SAFE_EMAIL_COMPONENT.fullmatch(user.email or ""):
            continue  # this user's email cannot be a path component: no root from this template
        path = template.replace("{user_id}", str(user.id)).replace("{email}", user.email)
        roots.append(Path(path).expanduser().resolve())
    return roots


OUTSIDE_ROOTS = ("local folders are limited to this account's folders under the server's "
                 "sources.local_roots")


def validate_folder(cfg: Config, user, folder: str, allow_any_folder: bool) -> str:
    """A local watch's folder: under this user's ``sources.local_roots`` unless an admin (the CLI) sets it,
    and an existing directory. Returned resolved, as it is stored; ValueError with the reason otherwise.

    Outside the roots every path gets the same answer, whether it exists, is unreadable (``/proc/1/root``),
    too long or a symlink out of a root, so the API is no oracle on the host's file system. The check is
    lexical first (before touching the path), then again on the resolved path (a symlink inside a root that
    points out of it)."""
    roots = None if allow_any_folder else local_roots(cfg, user)
    try:
        path = Path(folder).expanduser()
        if roots is not None and not _under(path, roots):
            raise ValueError(OUTSIDE_ROOTS)
        resolved = path.resolve()
        if roots is not None and not any(resolved.is_relative_to(r) for r in roots):
            raise ValueError(OUTSIDE_ROOTS)
        is_dir = resolved.is_dir()
    except (OSError, RuntimeError) as exc:  # too long, a loop, no such ~user, no permission
        if roots is not None:
            raise ValueError(OUTSIDE_ROOTS if not _under(Path(folder), roots) else
                             "folder is not a usable directory") from None
        raise ValueError(f"folder {folder[:200]!r} is not usable: {exc}") from None
    if not is_dir:
        raise ValueError(f"folder {str(resolved)[:500]} does not exist or is not a directory")
    return str(resolved)


def _under(path: Path, roots: list[Path]) -> bool:
    """Lexically under a root, without touching the file system."""
    try:
        lexical = Path(os.path.normpath(Path.cwd() / path.expanduser()))
    except (OSError, RuntimeError, ValueError):
        return False
    return any(lexical.is_relative_to(r) for r in roots)
