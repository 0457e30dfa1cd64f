"""A scripted, container-style fake platform and its publisher, shipped for tests.

It behaves like Instagram and Threads do: create a container from the image, the container is
``IN_PROGRESS`` for a while, then ``FINISHED``; publishing it makes a media id and the container
``PUBLISHED``. Its state lives in a directory (one JSON document, written atomically under a file lock),
so it survives SIGKILL and is shared by every process and thread using the directory: a crash test can
count containers across restarts and prove that none was made twice.

Behaviour is scripted per file name (the photo's name), with a default for the rest
(:meth:`ScriptedPlatform.set_script`):

``pending``      status checks answering ``IN_PROGRESS`` before ``FINISHED`` (default 0)
``wait``         seconds the publisher asks the pipeline to wait between checks (default 0.05)
``error``        the container ends in ``ERROR`` with this message (the target fails, permanently)
``fail_create``  container creations failing with a transient 503 first (default 0)
``unknown``      publish calls that go through but whose answer is lost (a timeout: outcome unknown)
``delay``        seconds every platform call takes (widens the windows a crash test aims at)
``fetch``        fetch the image by its public ``media_url`` (as Meta does) instead of reading the file

It is not registered: tests plug it in with ``registry.override(registry.DESTINATION, name,
scripted.factory(directory))``. Like procrastinate's in-memory connector, it exists so that tests of the
core exercise the real port, not a mock of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published, PublishRequest

IN_PROGRESS, FINISHED, ERROR, PUBLISHED = "IN_PROGRESS", "FINISHED", "ERROR", "PUBLISHED"
DEFAULT_SCRIPT = {"pending": 0, "wait": 0.05, "error": None, "fail_create": 0, "unknown": 0, "delay": 0.0,
                  "fetch": False}


def _now() -> datetime:
    return datetime.now(UTC)


class ScriptedPlatform:
    """The fake platform's side: containers and published media in ``directory``."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state_path = self.directory / "state.json"
        self._lock_path = self.directory / ".lock"

    # ------------------------------------------------------------------ storage

    @contextmanager
    def _state(self, write: bool = True) -> Iterator[dict]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # per open file: excludes other processes and threads alike
            try:
                state = json.loads(self._state_path.read_text()) if self._state_path.exists() else {}
                state.setdefault("next_id", 1000)
                state.setdefault("containers", {})
                state.setdefault("script", {"default": {}, "files": {}})
                state.setdefault("counters", {})
                yield state
                if write:
                    tmp = self._state_path.with_name(f".state.{os.getpid()}.tmp")
                    # Written whole, then renamed: a SIGKILL leaves the old or the new state, never half
                    # of one (no fsync: the point is surviving a killed process, not a power cut).
                    tmp.write_text(json.dumps(state))
                    os.replace(tmp, self._state_path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def set_script(self, default: dict | None = None, **files: dict) -> None:
        """``default``: the script for every file; ``files``: per file name (``{"a.jpg": {...}}``)."""
        with self._state() as st:
            if default is not None:
                st["script"]["default"] = default
            st["script"]["files"].update(files)

    def script_for(self, file_name: str) -> dict:
        with self._state(write=False) as st:
            return {**DEFAULT_SCRIPT, **st["script"]["default"], **st["script"]["files"].get(file_name, {})}

    def _count(self, st: dict, key: str, what: str) -> int:
        """How many times ``what`` happened for ``key`` before now (and count this one)."""
        counters = st["counters"].setdefault(key, {})
        n = counters.get(what, 0)
        counters[what] = n + 1
        return n

    # ------------------------------------------------------------------ the platform's API

    def create_container(self, key: str, file_name: str, caption: str, image: bytes) -> str:
        script = self.script_for(file_name)
        time.sleep(script["delay"])
        with self._state() as st:
            refused = self._count(st, key, "create") < script["fail_create"]
            if not refused:
                cid = str(st["next_id"])
                st["next_id"] += 1
                st["containers"][cid] = {
                    "id": cid, "key": key, "file_name": file_name, "caption": caption, "status": IN_PROGRESS,
                    "checks": 0, "media_id": None, "created_at": _now().isoformat(), "pid": os.getpid(),
                    "image_bytes": len(image), "image_sha256": hashlib.sha256(image).hexdigest(),
                }
        if refused:
            raise PublishError("503 Service Unavailable (container creation)", code="server_error")
        time.sleep(script["delay"])  # the container exists; the caller has not heard yet
        return cid

    def check(self, cid: str) -> dict:
        """GET /{container}?fields=status_code: each check moves processing along."""
        with self._state() as st:
            c = st["containers"][cid]
            script = {**DEFAULT_SCRIPT, **st["script"]["default"], **st["script"]["files"].get(c["file_name"], {})}
            if c["status"] == IN_PROGRESS:
                c["checks"] += 1
                if c["checks"] > script["pending"]:
                    c["status"] = ERROR if script["error"] else FINISHED
                    c["error"] = script["error"]
            return dict(c)

    def get(self, cid: str) -> dict | None:
        with self._state(write=False) as st:
            c = st["containers"].get(cid)
            return dict(c) if c else None

    def publish(self, cid: str) -> str:
        """POST /media_publish?creation_id=...: the post goes live (once)."""
        with self._state(write=False) as st:
            script = {**DEFAULT_SCRIPT, **st["script"]["default"],
                      **st["script"]["files"].get(st["containers"][cid]["file_name"], {})}
        time.sleep(script["delay"])
        with self._state() as st:
            c = st["containers"][cid]
            if c["status"] == PUBLISHED:
                raise PublishError(f"container {cid} is already published", permanent=True, code="bad_request")
            if c["status"] != FINISHED:
                raise PublishError(f"container {cid} is {c['status']}, not FINISHED", code="not_ready")
            c["status"], c["media_id"] = PUBLISHED, f"m{cid}"
            c["published_at"] = _now().isoformat()
            lost = self._count(st, c["key"], "publish_answer") < script["unknown"]
        if lost:
            raise PublishError("read timeout after sending media_publish", ambiguous=True, code="timeout")
        return f"m{cid}"

    def find(self, key: str, since: datetime) -> dict | None:
        """The newest container made for ``key`` since ``since`` (the platform's list of recent media)."""
        with self._state(write=False) as st:
            found = [c for c in st["containers"].values()
                     if c["key"] == key and datetime.fromisoformat(c["created_at"]) >= since]
        return dict(max(found, key=lambda c: int(c["id"]))) if found else None

    # ------------------------------------------------------------------ for assertions

    def containers(self) -> list[dict]:
        with self._state(write=False) as st:
            return sorted(st["containers"].values(), key=lambda c: int(c["id"]))


class ScriptedPublisher:
    """The publisher side: one step per call, checkpointing the container before it is published."""

    def __init__(self, directory: Path | str, platform: str = "scripted"):
        self.platform = platform
        self.remote = ScriptedPlatform(directory)

    def _image(self, req: PublishRequest, fetch: bool) -> bytes:
        if fetch:
            import httpx

            if not req.media_url:
                raise PublishError("no public media URL to give the platform (set api.public_url)",
                                   permanent=True, code="media")
            try:
                r = httpx.get(req.media_url, timeout=10)
            except httpx.HTTPError as exc:
                raise PublishError(f"the media could not be fetched from the URI: {exc}", code="media") from None
            if r.status_code != 200 or r.headers.get("content-type") != "image/jpeg":
                raise PublishError(f"the media could not be fetched from the URI (HTTP {r.status_code})",
                                   permanent=True, code="media")
            return r.content
        try:
            return Path(req.media_path).read_bytes()
        except FileNotFoundError as exc:
            raise PublishError(f"prepared image missing: {exc.filename}", permanent=True,
                               code="media_missing") from None

    def publish(self, req: PublishRequest) -> Published | Pending:
        script = self.remote.script_for(req.file_name)
        handle = dict(req.handle or {})
        cid = handle.get("container_id")
        if cid is None:
            image = self._image(req, script["fetch"])
            cid = self.remote.create_container(req.idempotency_key, req.file_name, req.caption, image)
            handle = {"container_id": cid}
            req.checkpoint(handle)  # durable before the next irreversible call (media_publish)
        c = self.remote.check(cid)
        if c["status"] == IN_PROGRESS:
            return Pending(handle, script["wait"], f"container {cid} processing (IN_PROGRESS)")
        if c["status"] == ERROR:
            raise PublishError(f"container {cid} failed: {c['error']}", permanent=True, code="media")
        if c["status"] == PUBLISHED:
            return Published(c["media_id"])
        return Published(self.remote.publish(cid))

    def recover(self, req: PublishRequest) -> Published | Pending | None:
        cid = (req.handle or {}).get("container_id")
        if cid is None:
            # Interrupted before the handle was committed: the container may exist all the same. Look
            # back to when this attempt began (minus a little clock skew), no further.
            since = (req.attempt_started_at or _now()) - timedelta(seconds=60)
            found = self.remote.find(req.idempotency_key, since)
            if found is None:
                return None
            cid = found["id"]
        c = self.remote.get(cid)
        if c is None or c["status"] == ERROR:
            return None
        if c["status"] == PUBLISHED:
            return Published(c["media_id"])
        return Pending({"container_id": cid}, 0, f"container {cid} {c['status']}")


def factory(directory: Path | str, platform: str = "scripted") -> Callable[..., ScriptedPublisher]:
    """For ``registry.override(registry.DESTINATION, platform, factory(directory))``."""
    return lambda deps: ScriptedPublisher(directory, platform)
