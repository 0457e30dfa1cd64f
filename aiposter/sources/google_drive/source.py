"""The ``google_drive`` registry entry: build a Drive adapter from the credential store and ``[oauth.google]``.

The adapter is built once per worker thread (see :mod:`aiposter.core.registry`). It keeps one
:class:`DriveClient` and one :class:`AncestryCache` per connection; the client's tokens come from the
:class:`~aiposter.core.credentials.CredentialStore`, and every token google-auth refreshes is saved back
through it (``on_refresh``: the access token and its expiry only; the client secret stays in the config and
is never written into a connection's secrets). A refresh refused by Google (``invalid_grant``) marks the
connection ``needs_reauth``: its watches and posts wait with that reason until the user reconnects.

Detection does not go through :meth:`Source.list`: Drive watches are polled per connection by
:mod:`aiposter.sources.google_drive.poller`. The pipeline's download step calls :meth:`DriveSource.fetch`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import urlparse

from aiposter.config import Config
from aiposter.core.errors import SourceError
from aiposter.core.ports import Listing, WatchRef
from aiposter.sources.google_drive.client import DriveClient, DriveSettings
from aiposter.sources.google_drive.feed import AncestryCache
from aiposter.sources.google_drive.folders import FolderLinkError, parse_folder_id

log = logging.getLogger("aiposter.drive")

# Codes that mean "this connection cannot be used until the user acts" (the refresh token was refused,
# or the token lacks the Drive scope).
AUTH_CODES = ("auth",)
# Codes that back the whole connection off (shared by every watch and post of that account).
TRANSIENT_CODES = ("timeout", "connection", "server_error", "overloaded", "rate_limited", "quota")


def settings_for(cfg: Config) -> DriveSettings:
    """Every Google URL from ``[oauth.google]`` (a test server or a proxy can stand in for each)."""
    g = cfg.oauth.google
    return DriveSettings(api_url=g.drive_api_url, token_uri=g.token_uri, revoke_uri=g.revoke_uri,
                         client_id=g.client_id,
                         client_secret=g.client_secret.get_secret_value() if g.client_secret else "",
                         timeout_seconds=cfg.oauth.timeout_seconds)


def push_enabled(cfg: Config) -> bool:
    """Push notifications need an HTTPS address Google can reach."""
    return bool(cfg.oauth.google.push) and urlparse(cfg.api.public_url or "").scheme == "https"


def min_interval(cfg: Config) -> int:
    g = cfg.oauth.google
    return g.push_min_interval_seconds if push_enabled(cfg) else g.min_interval_seconds


class DriveSource:
    name = "google_drive"

    def __init__(self, cfg: Config, store):
        self.cfg = cfg
        self.store = store  # a CredentialStore
        self.settings = settings_for(cfg)
        self._clients: dict[int, DriveClient] = {}
        self._caches: dict[int, AncestryCache] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ clients

    def client(self, connection_id: int) -> DriveClient:
        """The connection's client, built from its stored tokens (rebuilt after :meth:`forget`)."""
        with self._lock:
            c = self._clients.get(connection_id)
        if c is not None:
            return c
        if self.store is None:
            raise SourceError("no credential store (no encryption key loaded); cannot read Drive tokens",
                              permanent=True, code="config")
        creds = self.store.load(connection_id)
        secrets = {k: v for k, v in creds.secrets.items() if k != "client_secret"}

        def save(fresh: dict, cid=connection_id) -> None:
            self.store.save(cid, {k: v for k, v in fresh.items() if k != "client_secret"})

        c = DriveClient(secrets, self.settings, on_refresh=save)
        with self._lock:
            self._clients[connection_id] = c
        return c

    def cache(self, connection_id: int) -> AncestryCache:
        with self._lock:
            return self._caches.setdefault(connection_id, AncestryCache())

    def forget(self, connection_id: int) -> None:
        """Drop the client (its tokens were refused, or the account was reconnected or removed)."""
        with self._lock:
            c = self._clients.pop(connection_id, None)
            self._caches.pop(connection_id, None)
        if c is not None:
            c.close()

    def failed(self, connection_id: int, exc: SourceError) -> None:
        """An auth fault: the connection needs the user (marked, so its watches and posts wait)."""
        if exc.code in AUTH_CODES and self.store is not None:
            self.store.mark(connection_id, "needs_reauth", f"{exc}; reconnect the Google Drive account")
            self.forget(connection_id)

    # ------------------------------------------------------------------ the Source port

    def list(self, watch: WatchRef) -> Listing:  # pragma: no cover - the feed poller replaces it
        raise SourceError("Drive watches are polled per connection (drive feed), not one by one",
                          permanent=True, code="config")

    def fetch(self, watch: WatchRef, ref: str, dest: Path, max_bytes: int) -> None:
        """Download a Drive file (``ref`` is its id; a shortcut is followed) with the size cap and md5 check."""
        if watch.connection_id is None:
            raise SourceError("the Google Drive account of this watch was disconnected; reconnect it",
                              permanent=True, code="no_connection")
        client = self.client(watch.connection_id)
        try:
            client.download(ref, dest, max_bytes)
        except SourceError as exc:
            self.failed(watch.connection_id, exc)
            raise


def build(deps) -> DriveSource:
    return DriveSource(deps.cfg, deps.credentials)


def validate_folder(cfg: Config, user, folder: str, allow_any_folder: bool) -> str:
    """A Drive watch's folder as stored: the folder id from an id or a pasted link. That it exists, is a
    folder and is readable by the watch's connection is checked by the service (it needs the connection)."""
    try:
        return parse_folder_id(folder)
    except FolderLinkError as exc:
        raise ValueError(str(exc)) from None
