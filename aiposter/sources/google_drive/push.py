"""Drive push notifications: one ``changes.watch`` channel per connection, renewed before it expires.

A notification carries no change data: it only says "this account's feed moved", so the receiver
checks it (channel id known, secret token equal, resource id equal) and triggers an immediate
:func:`~aiposter.sources.google_drive.feed.poll_changes` of that connection. The first message on a new
channel has state ``sync`` and needs no poll. Polling stays on as the safety net: a lost notification
costs at most one poll interval.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from aiposter.core.errors import SourceError
from aiposter.sources.google_drive.client import DriveClient

MAX_TTL = timedelta(days=7)          # Drive's ceiling for changes.watch channels
RENEW_MARGIN = timedelta(hours=12)   # renew this long before expiry (several poll cycles of slack)


@dataclass(frozen=True)
class PushChannel:
    """What to store per connection (the token is a secret: store it encrypted or hashed-and-compared)."""

    id: str
    resource_id: str
    token: str
    address: str
    expires_at: datetime
    resource_uri: str = ""


@dataclass(frozen=True)
class Notification:
    channel_id: str
    resource_id: str
    state: str                        # "sync" (channel created), "change", ...
    message_number: int | None

    @property
    def should_poll(self) -> bool:
        return self.state != "sync"


class PushRejected(Exception):
    """A request to the notification endpoint that is not a valid message for a known channel (answer 403
    or 404, never poll)."""


def subscribe(client: DriveClient, page_token: str, address: str, *, ttl: timedelta = MAX_TTL,
              now: datetime | None = None) -> PushChannel:
    """Open a channel for the account's change feed, delivering to ``address`` (HTTPS, publicly
    reachable). Google may shorten the expiry; the returned one is Google's."""
    now = now or datetime.now(UTC)
    channel_id = str(uuid.uuid4())
    token = secrets.token_urlsafe(32)
    expiration_ms = int((now + min(ttl, MAX_TTL)).timestamp() * 1000)
    body = client.watch_changes(page_token, address, channel_id, token, expiration_ms)
    if body.get("id") != channel_id or not body.get("resourceId"):
        raise SourceError("Google Drive answered changes.watch without the channel", code="server_error")
    exp = body.get("expiration")
    expires_at = datetime.fromtimestamp(int(exp) / 1000, UTC) if exp else now + min(ttl, MAX_TTL)
    return PushChannel(channel_id, str(body["resourceId"]), token, address, expires_at,
                       str(body.get("resourceUri") or ""))


def renew_due(channel: PushChannel, now: datetime | None = None, margin: timedelta = RENEW_MARGIN) -> bool:
    return (now or datetime.now(UTC)) >= channel.expires_at - margin


def renew(client: DriveClient, channel: PushChannel, page_token: str, *, address: str | None = None,
          ttl: timedelta = MAX_TTL) -> PushChannel:
    """A new channel first, then the old one stopped (best effort), so there is no gap without push."""
    fresh = subscribe(client, page_token, address or channel.address, ttl=ttl)
    try:
        unsubscribe(client, channel)
    except SourceError:
        pass  # it expires on its own; its notifications are rejected once the new channel is stored
    return fresh


def unsubscribe(client: DriveClient, channel: PushChannel) -> bool:
    """``channels.stop``; False when Google no longer knew the channel."""
    return client.stop_channel(channel.id, channel.resource_id)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    want = name.lower()
    for k, v in headers.items():
        if k.lower() == want:
            return v
    return None


def channel_id_of(headers: Mapping[str, str]) -> str | None:
    """The channel a notification claims to be for (look the channel up by it, then verify)."""
    return _header(headers, "X-Goog-Channel-ID")


def verify_notification(headers: Mapping[str, str], channel: PushChannel | None,
                        now: datetime | None = None) -> Notification:
    """Check a notification's ``X-Goog-*`` headers against the stored channel, in constant time for the
    token. Raises :class:`PushRejected` for an unknown, expired or forged message."""
    cid = channel_id_of(headers)
    if channel is None or not cid or cid != channel.id:
        raise PushRejected("unknown push channel")
    token = _header(headers, "X-Goog-Channel-Token") or ""
    if not hmac.compare_digest(token.encode(), channel.token.encode()):
        raise PushRejected("push channel token does not match")
    if (_header(headers, "X-Goog-Resource-ID") or "") != channel.resource_id:
        raise PushRejected("push notification for another resource")
    if (now or datetime.now(UTC)) > channel.expires_at + timedelta(minutes=5):
        raise PushRejected("push channel expired")
    state = (_header(headers, "X-Goog-Resource-State") or "").lower()
    if not state:
        raise PushRejected("push notification without a resource state")
    number = _header(headers, "X-Goog-Message-Number")
    return Notification(cid, channel.resource_id, state, int(number) if number and number.isdigit() else None)


def header_expiration(headers: Mapping[str, str]) -> datetime | None:
    """``X-Goog-Channel-Expiration`` (an HTTP date) if present and readable."""
    value = _header(headers, "X-Goog-Channel-Expiration")
    try:
        return parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        return None
