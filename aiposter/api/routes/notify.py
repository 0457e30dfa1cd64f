"""Notifications: the owner's Apprise URLs (stored encrypted, shown masked), a test message, and what was
sent lately."""

from __future__ import annotations

from fastapi import APIRouter

from aiposter.api.deps import DB, Application, CurrentUser
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, NotificationOut, NotifyChannelIn, NotifyChannelOut, NotifyTestOut, PathId
from aiposter.services import notify

router = APIRouter(prefix="/api/v1/notify", tags=["notify"], responses=responses(401, 422))


@router.get("/channels", response_model=list[NotifyChannelOut])
def list_channels(user: CurrentUser, s: DB, app: Application) -> list[NotifyChannelOut]:
    """Your notification URLs, with their secrets masked."""
    return [NotifyChannelOut.model_validate(notify.channel_dict(c, app.keyring))
            for c in notify.list_channels(s, user)]


@router.post("/channels", response_model=NotifyChannelOut, status_code=201)
def add_channel(body: NotifyChannelIn, user: CurrentUser, s: DB, app: Application) -> NotifyChannelOut:
    """Add an Apprise URL (ntfy://, tgram://, mailto://, slack://, json://...); stored encrypted."""
    return NotifyChannelOut.model_validate(notify.channel_dict(
        notify.add_channel(s, app.keyring, user, body.url, body.label), app.keyring))


@router.delete("/channels/{channel_id}", response_model=Done, responses=responses(404))
def remove_channel(channel_id: PathId, user: CurrentUser, s: DB) -> Done:
    notify.remove_channel(s, user, channel_id)
    return Done(detail=f"notification URL {channel_id} removed")


@router.post("/test", response_model=NotifyTestOut)
def send_test(user: CurrentUser, s: DB, app: Application) -> NotifyTestOut:
    """Send a sample message to every URL now; says whether a receiver took it."""
    result = notify.send_test(s, app.keyring, app.cfg, user)
    return NotifyTestOut(ok=result.ok, error=result.error)


@router.get("/recent", response_model=list[NotificationOut])
def recent(user: CurrentUser, s: DB) -> list[NotificationOut]:
    """The latest notifications queued for you, sent or not."""
    return [NotificationOut.model_validate(notify.notification_dict(n)) for n in notify.recent(s, user)]
