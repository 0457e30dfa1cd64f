"""Push notifications in the daemon: a ``changes.watch`` channel per Drive connection, when reachable.

On when ``[oauth.google] push`` is true and ``api.public_url`` is HTTPS (Google delivers only to HTTPS).
Housekeeping (:func:`maintain`) opens a channel for every connection that has enabled Drive watches and a
page token, and renews it before it expires (new channel first, then the old one stopped: no gap). The
API's ``POST /api/v1/drive/push`` (:func:`receive`) checks a notification against the stored channel (id,
secret token in constant time, resource id, expiry) and makes that connection's feed due now, so a change
is seen within a tick. Polling stays on as the safety net, at the watches' interval. Disconnecting stops
the connection's channels (:func:`stop_all`), and so does deleting, disabling or moving its last Drive watch
(``services.drive.release_push``); housekeeping stops the channels of connections left without an enabled
Drive watch as the safety net (:func:`stop_idle`).

The channel's secret token is stored encrypted like a credential (``drive_push_channel.token``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter import crypto
from aiposter.config import Config
from aiposter.core import credentials
from aiposter.core.drive_feeds import has_drive_watch, poll_connection_now
from aiposter.core.errors import StepError
from aiposter.core.models import Connection, DriveFeed, DrivePushChannel, utcnow
from aiposter.db import session_scope
from aiposter.sources.google_drive.push import (
    PushChannel,
    PushRejected,
    channel_id_of,
    renew_due,
    subscribe,
    unsubscribe,
    verify_notification,
)
from aiposter.sources.google_drive.source import DriveSource, push_enabled

log = logging.getLogger("aiposter.drive")
PUSH_PATH = "/api/v1/drive/push"


def push_address(cfg: Config) -> str:
    """Where Google delivers notifications: ``[oauth.google] push_address``, else the public API URL."""
    return cfg.oauth.google.push_address or f"{cfg.api.public_url.rstrip('/')}{PUSH_PATH}"


def _context(channel_id: str) -> str:
    return f"drive-push:{channel_id}"


def _as_channel(keyring: crypto.Keyring, row: DrivePushChannel) -> PushChannel:
    token = keyring.decrypt(row.token, context=_context(row.channel_id))
    return PushChannel(row.channel_id, row.resource_id, token, row.address, row.expires_at)


def _store(s: Session, keyring: crypto.Keyring, cid: int, ch: PushChannel) -> None:
    s.add(DrivePushChannel(connection_id=cid, channel_id=ch.id, resource_id=ch.resource_id,
                           token=keyring.encrypt(ch.token, context=_context(ch.id)), address=ch.address,
                           expires_at=ch.expires_at))


def maintain(ctx) -> dict[str, int]:
    """Housekeeping: open missing channels, renew those close to expiry. Each connection is handled under
    its feed's lease, so replicas do not open two channels for one account."""
    counts = {"opened": 0, "renewed": 0, "failed": 0}
    if ctx.keyring is None:
        return counts
    counts["stopped"] = stop_idle(ctx)
    if not push_enabled(ctx.cfg):
        return counts
    now = utcnow()
    with session_scope(ctx.engine) as s:
        feeds = list(s.execute(sa.select(DriveFeed.id, DriveFeed.connection_id, DriveFeed.page_token)
                               .where(has_drive_watch(DriveFeed.connection_id), DriveFeed.page_token.is_not(None))))
    source: DriveSource = ctx.source("google_drive")
    address = push_address(ctx.cfg)
    for feed_id, cid, token in feeds:
        with session_scope(ctx.engine) as s:
            if credentials.unusable_reason(s.get(Connection, cid), now):
                continue
            rows = list(s.exec(select(DrivePushChannel).where(DrivePushChannel.connection_id == cid)
                               .order_by(DrivePushChannel.expires_at.desc())))
            current = rows[0] if rows else None
            if current is not None and not renew_due(_as_channel(ctx.keyring, current), now):
                continue
            leased = s.execute(sa.update(DriveFeed).where(DriveFeed.id == feed_id).where(sa.or_(
                DriveFeed.lease_expires_at.is_(None), DriveFeed.lease_expires_at < now))
                .values(lease_owner=ctx.owner, lease_expires_at=now + timedelta(seconds=60))).rowcount
            old = _as_channel(ctx.keyring, current) if current is not None else None
        if not leased:
            continue
        try:
            client = source.client(cid)
            fresh = subscribe(client, token, address)
            with session_scope(ctx.engine) as s:
                _store(s, ctx.keyring, cid, fresh)
            if old is not None:
                try:
                    unsubscribe(client, old)
                except StepError:
                    pass  # it expires on its own; its notifications no longer match a stored channel
                with session_scope(ctx.engine) as s:
                    s.execute(sa.delete(DrivePushChannel).where(DrivePushChannel.channel_id == old.id))
            counts["renewed" if old is not None else "opened"] += 1
        except StepError as exc:
            counts["failed"] += 1
            source.failed(cid, exc)
            log.warning("drive.push_subscribe_failed", extra={"connection_id": cid, "error": str(exc)})
        finally:
            with session_scope(ctx.engine) as s:
                s.execute(sa.update(DriveFeed).where(DriveFeed.id == feed_id, DriveFeed.lease_owner == ctx.owner)
                          .values(lease_owner=None, lease_expires_at=None))
    return counts


def receive(s: Session, keyring: crypto.Keyring | None, headers: Mapping[str, str]) -> bool:
    """A notification from Google: True if it was valid (and its connection is now due for a poll).
    Raises :class:`PushRejected` for an unknown, forged or expired one."""
    cid_header = channel_id_of(headers)
    if not cid_header or keyring is None:
        raise PushRejected("unknown push channel")
    row = s.exec(select(DrivePushChannel).where(DrivePushChannel.channel_id == cid_header[:64])).first()
    note = verify_notification(headers, _as_channel(keyring, row) if row is not None else None)
    if note.should_poll:
        poll_connection_now(s, row.connection_id)
    return True


def stop_all(s: Session, keyring: crypto.Keyring | None, connection_id: int, client) -> int:
    """Stop the connection's channels at Google (best effort: with a ``client`` and the key) and delete
    their rows (and secrets) at once, so a late notification matches nothing. Returns how many Google
    confirmed."""
    stopped = 0
    for row in s.exec(select(DrivePushChannel).where(DrivePushChannel.connection_id == connection_id)):
        if client is not None and keyring is not None:
            try:
                unsubscribe(client, _as_channel(keyring, row))
                stopped += 1
            except (StepError, crypto.DecryptError):
                pass  # it expires on its own within a day
        s.delete(row)
    s.flush()
    return stopped


def stop_idle(ctx) -> int:
    """Housekeeping's safety net: stop the channels of connections with no enabled Drive watch left (a
    watch removed by a path that could not reach Google, another replica's crash...)."""
    with session_scope(ctx.engine) as s:
        idle = list(s.exec(select(DrivePushChannel.connection_id).distinct()
                           .where(~has_drive_watch(DrivePushChannel.connection_id))))
    stopped = 0
    for cid in idle:
        try:
            client = ctx.source("google_drive").client(cid)
        except StepError:
            client = None  # tokens unusable: the rows go anyway; Google's side expires on its own
        with session_scope(ctx.engine) as s:
            if not s.execute(sa.select(has_drive_watch(cid))).scalar():  # a watch added meanwhile keeps it
                stopped += stop_all(s, ctx.keyring, cid, client)
        log.info("drive.push_stopped_idle", extra={"connection_id": cid})
    return stopped
