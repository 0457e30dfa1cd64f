"""The ``drive_feed`` rows: one per Google Drive connection, claimed with a lease like a watch.

Kept apart from the Drive package so that the daemon's tick (every second) does not import the Google
client libraries on installs that watch no Drive folder. The polling itself is
:mod:`aiposter.sources.google_drive.poller`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from aiposter.core.models import DriveFeed, User, Watch, utcnow
from aiposter.core.queue import _claim

SOURCE = "google_drive"


def ensure_feed(s: Session, connection_id: int, due: datetime | None = None) -> DriveFeed:
    """The connection's feed row (created on its first watch). ``due``: poll it no later than this."""
    feed = s.exec(select(DriveFeed).where(DriveFeed.connection_id == connection_id)).first()
    if feed is None:
        try:
            with s.begin_nested():
                feed = DriveFeed(connection_id=connection_id, next_poll_at=due or utcnow())
                s.add(feed)
        except sa.exc.IntegrityError:  # created by another request at the same moment
            feed = s.exec(select(DriveFeed).where(DriveFeed.connection_id == connection_id)).one()
    elif due is not None and feed.next_poll_at > due:
        feed.next_poll_at = due
    return feed


def poll_connection_now(s: Session, connection_id: int) -> bool:
    """Make the connection's feed due now (a push notification, ``watch poll``). False: no feed."""
    return s.execute(sa.update(DriveFeed).where(DriveFeed.connection_id == connection_id)
                     .values(next_poll_at=utcnow())).rowcount == 1


def has_drive_watch(connection_id, *, processing: bool = False) -> sa.Exists:
    """EXISTS an enabled Drive watch of an enabled user on this connection (a column or a value);
    ``processing``: and its user has not paused processing."""
    q = (sa.select(Watch.id).join(User, User.id == Watch.user_id)
         .where(Watch.source == SOURCE, Watch.source_connection_id == connection_id, Watch.enabled.is_(True),
                User.disabled.is_(False)))
    if processing:
        q = q.where(User.processing_paused.is_(False))
    return q.exists()


def claim_feeds(s: Session, owner: str, lease_seconds: int, limit: int, now: datetime | None = None) -> list[int]:
    """Due feeds of connections with at least one enabled Drive watch of an active user."""
    now = now or utcnow()
    q = (sa.select(DriveFeed.id)
         .where(DriveFeed.next_poll_at <= now, has_drive_watch(DriveFeed.connection_id, processing=True))
         .where(sa.or_(DriveFeed.lease_expires_at.is_(None), DriveFeed.lease_expires_at < now))
         .order_by(DriveFeed.next_poll_at, DriveFeed.id)
         .limit(limit)
         .with_for_update(skip_locked=True, of=DriveFeed))
    return _claim(s, DriveFeed, q, owner, lease_seconds, now)


def renew(s: Session, owner: str, lease_seconds: int) -> int:
    return s.execute(sa.update(DriveFeed).where(DriveFeed.lease_owner == owner)
                     .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))).rowcount


def release_all(s: Session, owner: str | None = None) -> int:
    stmt = sa.update(DriveFeed).where(DriveFeed.lease_owner.is_not(None))
    if owner is not None:
        stmt = stmt.where(DriveFeed.lease_owner == owner)
    return s.execute(stmt.values(lease_owner=None, lease_expires_at=None)).rowcount
