"""Drive watches and connections: the folder check and baseline at watch creation, the folder picker,
disconnect (revoke at Google, best effort).

These run inside the caller's unit of work: the folder check, the start page token and the baseline
listing are Drive requests made before the watch is committed, and what they find is written in the same
transaction as the watch (a watch never exists without its baseline, and a failed check creates nothing).
Tokens google-auth refreshes meanwhile are written into the connection row in the same session (not
through another connection, which SQLite would make wait on this transaction).
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter import crypto
from aiposter.config import Config
from aiposter.core import credentials, image_types
from aiposter.core.errors import SourceError, StepError
from aiposter.core.models import Connection, User, Watch, utcnow
from aiposter.services import Invalid, ServiceError, Unavailable, get_owned
from aiposter.sources.google_drive.client import DriveClient, revoke_token
from aiposter.sources.google_drive.feed import WatchSpec, list_watch
from aiposter.sources.google_drive.folders import check_folder, list_folders
from aiposter.sources.google_drive.poller import apply_baseline, ensure_feed
from aiposter.sources.google_drive.source import AUTH_CODES, settings_for

log = logging.getLogger("aiposter.drive")
PROVIDER = "google_drive"


class _Session:
    """A DriveClient for one connection inside a unit of work; refreshed tokens saved in the same session."""

    def __init__(self, s: Session, cfg: Config, keyring: crypto.Keyring | None, connection: Connection):
        self.s, self.cfg, self.connection = s, cfg, connection
        if keyring is None:  # loaded by the caller before its unit of work (SQLite: no second connection now)
            raise Invalid("the server's encryption key is not loaded, so the Drive account's tokens cannot be "
                          "read", field="source_connection_id")
        self.keyring = keyring
        if not connection.credentials:
            raise Invalid(f"the Google Drive account {connection.account_name} has no stored tokens; reconnect it",
                          field="source_connection_id")
        problem = credentials.unusable_reason(connection)
        if problem:
            raise Invalid(problem, field="source_connection_id")
        secrets = json.loads(keyring.decrypt(connection.credentials,
                                             context=crypto.connection_context(connection.id)))
        secrets.pop("client_secret", None)
        self.refreshed: list[dict] = []
        self.client = DriveClient(secrets, settings_for(cfg), on_refresh=self.refreshed.append)

    def close(self) -> None:
        if self.refreshed:
            fresh = {k: v for k, v in self.refreshed[-1].items() if k != "client_secret"}
            self.connection.credentials = self.keyring.encrypt(
                json.dumps(fresh), context=crypto.connection_context(self.connection.id))
            self.connection.last_checked_at = utcnow()
        self.client.close()


def _fail(exc: StepError, connection: Connection, s: Session, cfg: Config, field: str = "folder") -> ServiceError:
    """A Drive error as the user should read it."""
    if exc.code in AUTH_CODES:
        credentials.mark(s, cfg, connection.id, credentials.NEEDS_REAUTH,
                         f"{exc}; reconnect the Google Drive account")
        return Invalid(f"the Google Drive account {connection.account_name} needs to be reconnected: {exc}",
                       field="source_connection_id")
    if exc.permanent:
        return Invalid(str(exc), field=field)
    return Unavailable(f"Google Drive did not answer ({exc}); nothing was changed, try again shortly")


def prepare_watch(s: Session, cfg: Config, keyring: crypto.Keyring | None, watch: Watch,
                  include_subfolders: bool | None = None) -> None:
    """Check a Drive watch's folder (exists, is a folder, readable by this connection), name it, make sure
    the connection's feed has a page token, and take the baseline, all before the watch is committed."""
    if include_subfolders is not None:
        watch.include_subfolders = include_subfolders
    connection = s.get(Connection, watch.source_connection_id)
    ds = _Session(s, cfg, keyring, connection)
    try:
        try:
            folder = check_folder(ds.client, watch.folder)
        except SourceError as exc:
            raise _fail(exc, connection, s, cfg) from None
        watch.folder, watch.folder_name, watch.drive_id = folder.id, folder.name, folder.drive_id
        if not watch.name or watch.name == f"watch {watch.id}":
            watch.name = folder.name or watch.name
        feed = ensure_feed(s, connection.id)
        try:
            if feed.page_token is None:
                # The token first: whatever changes while the folder is listed is read by the first poll.
                feed.page_token = ds.client.start_page_token()
            listing = list_watch(ds.client, WatchSpec(watch.id, folder.id, watch.include_subfolders,
                                                      image_types.from_column(watch.image_types),
                                                      drive_id=folder.drive_id))
        except SourceError as exc:
            if exc.permanent:
                raise _fail(exc, connection, s, cfg) from None
            # Transient: the watch is created and the first poll takes the baseline.
            watch.baseline_done = False
            log.warning("drive.baseline_deferred", extra={"watch_id": watch.id, "error": str(exc)})
            return
        apply_baseline(s, watch, listing)
        watch.last_poll_at = None
    finally:
        ds.close()


def folders(s: Session, cfg: Config, keyring: crypto.Keyring | None, user: User | None, connection_id: int,
            parent: str | None = None, query: str | None = None, page_token: str | None = None) -> dict:
    """Folders for a picker: shared drives and My Drive at the top, a folder's subfolders, or a search."""
    c = get_owned(s, Connection, connection_id, user, "connection")
    if c.provider != PROVIDER:
        raise Invalid(f"connection {connection_id} is not a Google Drive connection", field="connection_id")
    ds = _Session(s, cfg, keyring, c)
    try:
        page = list_folders(ds.client, parent=parent or None, query=query or None, page_token=page_token or None)
    except SourceError as exc:
        raise _fail(exc, c, s, cfg, field="parent") from None
    finally:
        ds.close()
    def row(f, kind: str) -> dict:
        return {"id": f.id, "name": f.name, "kind": kind, "drive_id": f.drive_id, "parent": (f.parents or (None,))[0]}

    return {"folders": [row(d, "shared_drive") for d in page.shared_drives] +
            [row(f, "folder") for f in page.folders],
            "next_page_token": page.next_page_token}


def disconnect(s: Session, cfg: Config, keyring: crypto.Keyring | None, connection: Connection) -> str | None:
    """Before a Drive connection's row (and tokens) are deleted: stop its push channels and revoke the
    token at Google, both best effort. Returns a note for the user when Google did not confirm."""
    if connection.provider != PROVIDER:
        return None
    _stop_channels(s, cfg, keyring, connection)
    return revoke(cfg, keyring, connection)


def release_push(s: Session, cfg: Config, keyring: crypto.Keyring | None, connection_id: int | None) -> int:
    """After a Drive watch was deleted, disabled or moved to another account: if its connection has no
    enabled Drive watch left, stop the connection's push channels (at Google best effort; the rows and
    secrets at once) instead of leaving them open until they expire. Returns how many Google confirmed."""
    from aiposter.core.drive_feeds import has_drive_watch

    if connection_id is None or s.execute(sa.select(has_drive_watch(connection_id))).scalar():
        return 0
    connection = s.get(Connection, connection_id)
    return 0 if connection is None else _stop_channels(s, cfg, keyring, connection)


def _stop_channels(s: Session, cfg: Config, keyring: crypto.Keyring | None, connection: Connection) -> int:
    from aiposter.core.models import DrivePushChannel
    from aiposter.sources.google_drive import channels

    if not s.exec(select(DrivePushChannel.id).where(DrivePushChannel.connection_id == connection.id)).first():
        return 0
    client = None
    if keyring is not None and connection.credentials:
        try:
            secrets = json.loads(keyring.decrypt(connection.credentials,
                                                 context=crypto.connection_context(connection.id)))
            client = DriveClient({k: v for k, v in secrets.items() if k != "client_secret"}, settings_for(cfg))
        except (crypto.DecryptError, ValueError, StepError):
            pass  # the channels expire on their own; their notifications match nothing once the rows are gone
    try:
        return channels.stop_all(s, keyring, connection.id, client)
    finally:
        if client is not None:
            client.close()


def revoke(cfg: Config, keyring: crypto.Keyring | None, connection: Connection) -> str | None:
    """Revoke the connection's token at Google (best effort: the stored token is deleted either way).
    Returns a note when revoking failed."""
    if connection.provider != PROVIDER or not connection.credentials or keyring is None:
        return None
    try:
        secrets = json.loads(keyring.decrypt(connection.credentials,
                                             context=crypto.connection_context(connection.id)))
    except (crypto.DecryptError, ValueError):
        return "the stored token could not be read, so it was not revoked at Google"
    token = secrets.get("refresh_token") or secrets.get("token")
    if not token:
        return None
    result = revoke_token(token, cfg.oauth.google.revoke_uri, timeout_seconds=cfg.oauth.timeout_seconds)
    if not result.ok:
        log.warning("drive.revoke_failed", extra={"connection_id": connection.id, "error": result.message})
        return f"Google did not confirm the revocation ({result.message}); remove access at " \
               "https://myaccount.google.com/permissions"
    return None
