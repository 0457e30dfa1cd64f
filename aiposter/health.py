"""A health signal for every role, for container healthchecks: `aiposter health`.

A ``worker`` has no HTTP API to probe, so each serving process writes a heartbeat file
(``<data_dir>/heartbeat-<hostname>.json``: one per container, as each has its own hostname) saying what
it runs. The scheduler refreshes it from its tick, so a stale file means the claiming loop has stopped.
``aiposter health`` reads it and checks what the process runs: the heartbeat's age for the scheduler,
``/healthz`` for the API. Exit 0 when healthy, 1 with one line saying why not.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from aiposter.config import Config

HEARTBEAT_SECONDS = 5.0  # how often the scheduler rewrites the file (at most)


def heartbeat_path(cfg: Config) -> Path:
    return cfg.data_dir / f"heartbeat-{socket.gethostname()}.json"


def stale_after(cfg: Config) -> float:
    """A scheduler whose heartbeat is older than this is unhealthy (several missed ticks, not one slow one)."""
    return max(60.0, 10 * cfg.daemon.tick_seconds)


def api_url(host: str, port: int) -> str:
    """The address a probe in the same host or container reaches the API at."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class Heartbeat:
    """Written by a serving process: once at start, then by the scheduler's tick (throttled)."""

    def __init__(self, cfg: Config, *, worker: bool, api: str | None):
        self.path = heartbeat_path(cfg)
        self.worker, self.api = worker, api
        self._last = 0.0
        self._lock = threading.Lock()

    def beat(self, force: bool = False) -> None:
        now = time.time()
        with self._lock:
            if not force and now - self._last < HEARTBEAT_SECONDS:
                return
            self._last = now
            doc = {"pid": os.getpid(), "worker": self.worker, "api": self.api, "at": now}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.path)  # a reader never sees half a file

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def check(cfg: Config, now: float | None = None) -> tuple[bool, str]:
    """(healthy, one line) for the aiposter process on this host (container)."""
    path = heartbeat_path(cfg)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return False, f"no heartbeat at {path}: aiposter run, worker or api is not running here (yet)"
    except (OSError, ValueError) as exc:
        return False, f"cannot read the heartbeat {path}: {exc}"
    parts = []
    if doc.get("worker"):
        age = (time.time() if now is None else now) - float(doc.get("at", 0))
        if age > stale_after(cfg):
            return False, f"the scheduler's last heartbeat was {age:.0f} s ago (limit {stale_after(cfg):.0f} s)"
        parts.append(f"scheduler ticked {max(age, 0):.0f} s ago")
    if doc.get("api"):
        url = f"{doc['api']}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 - our own loopback URL
                if resp.status != 200:
                    return False, f"{url} answered {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            return False, f"{url} does not answer: {getattr(exc, 'reason', exc)}"
        parts.append(f"{url} ok")
    return True, "healthy: " + ", ".join(parts or ["nothing to check"])
