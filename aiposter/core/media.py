"""Where prepared images live while their post is in flight, and the signed URLs platforms fetch them by.

A post's image is stored under one key (``Post.media_key``, e.g. ``"42.jpg"``) in a :class:`MediaStore`.
Every replica reaches the same store: by default a local directory (``[media] directory``) that replicas
share over a common volume; the interface is small enough for an S3-compatible bucket later. Nothing
outside this module knows where the bytes are, so a publish step claimed by another replica finds the
image its download step prepared.

Platforms that fetch the image themselves (Instagram, Threads: "Meta cURLs it") get a
:class:`MediaUrls` link: ``<api.public_url>/media/<post>/<expires>/<signature>.jpg``, an HMAC over the
post id and expiry with a key derived (HKDF) from the encryption keyring, so there is nothing new to
configure and every replica signs and verifies alike. The API process serves it while the post is in
flight (see :mod:`aiposter.api.routes.media`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def post_key(post_id: int, variant: str | None = None) -> str:
    """The key of a post's prepared JPEG, or of its copy fitted for one destination (``variant``: the
    platform, e.g. ``"42.instagram.jpg"``). Every key starts with the post id, so deleting the post's media
    and the housekeeping sweep take the variants too."""
    if variant is None:
        return f"{post_id}.jpg"
    if not (variant.isascii() and variant.isalpha() and variant.islower()):
        raise ValueError(f"bad media variant {variant!r}")
    return f"{post_id}.{variant}.jpg"


def _post_id_of(name: str) -> int | None:
    # "<id>.jpg", "<id>.instagram.jpg", "<id>.download", "<id>.prepared" and ".<id>.jpg.<pid>.tmp" (a write
    # cut off by a crash)
    stem = name.lstrip(".").split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


class MediaStore(Protocol):
    """Prepared images by key, plus a local work area for downloads in progress."""

    def work_path(self, post_id: int, suffix: str) -> Path:
        """A local file path for a download or preparation in progress (deleted with the post's media)."""

    def put(self, key: str, src: Path) -> None:
        """Store the local file ``src`` under ``key`` (atomically: readers see all of it or nothing)."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes. FileNotFoundError if there are none."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None: ...

    def local_path(self, key: str) -> Path:
        """A readable local file with the stored bytes (the image code and the SDKs want paths)."""

    def delete_post(self, post_id: int) -> None:
        """Delete everything stored for a post: image, download, temp files."""

    def sweep(self, active: Callable[[list[int]], set[int]]) -> int:
        """Delete what belongs to posts that are no longer active. ``active(ids)`` answers, from the
        database, which of the ids found are still in flight. Returns the number of files removed."""


class LocalMediaStore:
    """A directory, shared by every replica (a common volume); files are named by post id."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"LocalMediaStore({str(self.directory)!r})"

    def _path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"bad media key {key!r}")
        return self.directory / key

    def work_path(self, post_id: int, suffix: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{post_id}.{suffix}"

    def put(self, key: str, src: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = Path(src)
        if src.parent.resolve() == dest.parent.resolve():
            os.replace(src, dest)  # same directory: a rename is atomic
            return
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def delete_post(self, post_id: int) -> None:
        for pattern in (f"{post_id}.*", f".{post_id}.*"):
            for p in self.directory.glob(pattern):
                p.unlink(missing_ok=True)

    def sweep(self, active: Callable[[list[int]], set[int]]) -> int:
        if not self.directory.is_dir():
            return 0
        by_post: dict[int, list[Path]] = {}
        for p in self.directory.iterdir():
            pid = _post_id_of(p.name)
            if pid is not None:
                by_post.setdefault(pid, []).append(p)
        if not by_post:
            return 0
        keep = active(list(by_post))
        removed = 0
        for pid, paths in by_post.items():
            if pid not in keep:
                for p in paths:
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed


def store_for(cfg) -> MediaStore:
    """The install's media store (``[media]``)."""
    return LocalMediaStore(cfg.media_dir)


# --------------------------------------------------------------------------- signed URLs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def url_key(secret: bytes) -> bytes:
    """The URL-signing key: derived from an encryption key, never the key itself."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"aiposter media url v1").derive(secret)


class MediaUrls:
    """Signs and verifies ``/media/<post>/<expires>/<signature>.jpg`` links, and
    ``/media/<post>/<variant>/<expires>/<signature>.jpg`` for the copy fitted for one destination (the
    variant is signed too: a link to one copy cannot be turned into a link to another).

    Signs with the keyring's active key; verifies with any key of the keyring, so links made just before a
    key rotation still work until they expire."""

    PREFIX = "/media"

    def __init__(self, keyring, base_url: str, ttl_seconds: int):
        self.base_url = base_url.rstrip("/")
        self.ttl_seconds = ttl_seconds
        self._sign_key = url_key(keyring.active.secret)
        self._verify_keys = [url_key(k.secret) for k in keyring.keys.values()]

    @staticmethod
    def _sig(key: bytes, post_id: int | str, expires: int, variant: str | None = None) -> str:
        what = f"{post_id}:{expires}" if variant is None else f"{post_id}:{variant}:{expires}"
        return _b64(hmac.new(key, f"media:{what}".encode(), hashlib.sha256).digest())

    def path(self, post_id: int, now: datetime, variant: str | None = None) -> str:
        expires = int(now.timestamp()) + self.ttl_seconds
        sig = self._sig(self._sign_key, post_id, expires, variant)
        middle = f"{post_id}/{expires}" if variant is None else f"{post_id}/{variant}/{expires}"
        return f"{self.PREFIX}/{middle}/{sig}.jpg"

    def url(self, post_id: int, now: datetime, variant: str | None = None) -> str:
        return self.base_url + self.path(post_id, now, variant)

    def verify(self, post_id: int | str, expires: int, signature: str, now: datetime,
               variant: str | None = None) -> bool:
        """The signature is ours and the link has not expired."""
        if expires < now.timestamp():
            return False
        return any(hmac.compare_digest(self._sig(k, post_id, expires, variant), signature)
                   for k in self._verify_keys)

    def probe_url(self, now: datetime) -> str:
        """A link to a small sample JPEG, valid for PROBE_TTL seconds: what ``aiposter config check`` fetches
        as Meta does, to see the public route work end to end without any post in flight."""
        expires = int(now.timestamp()) + PROBE_TTL
        return f"{self.base_url}{self.PREFIX}/{PROBE}/{expires}/{self._sig(self._sign_key, PROBE, expires)}.jpg"


PROBE = "probe"  # the probe link's "post id": never a number, so never a post
PROBE_TTL = 60


def public_base_url(cfg) -> str:
    """The URL platforms and users reach the API at."""
    api = cfg.api
    return (api.public_url or f"http://{api.host}:{api.port}").rstrip("/")


def urls_for(cfg, keyring) -> MediaUrls | None:
    if keyring is None:
        return None
    return MediaUrls(keyring, public_base_url(cfg), cfg.media.url_ttl_seconds)
