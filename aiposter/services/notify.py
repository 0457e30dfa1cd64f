"""Notifications to the owner, through their own Apprise URLs (email, Telegram, Slack, ntfy, webhooks...).

Two halves, so that telling the owner never slows or blocks the pipeline:

* :func:`enqueue` is called in the transaction of the event it reports (a post failed, a connection needs
  reconnecting, a quota is exhausted, a post waits for review). It only inserts a row; the unique
  ``(user_id, dedup_key)`` makes a repeat (another worker, replica or retry) a no-op.
* :func:`deliver_due`, run by the daemon on its own timer thread, claims a user's pending rows with a
  lease (replicas never send the same row twice), sends them as **one** message (a digest: ten posts
  waiting for review are one message, not ten) at most once per ``notify.min_interval_seconds`` per user,
  and records the outcome. A failed delivery is logged and retried up to ``notify.max_attempts``; a dead
  receiver costs only this thread its ``notify.timeout_seconds``.

Apprise URLs hold secrets (bot tokens, passwords, webhook paths): they are stored encrypted like OAuth
tokens, and shown masked (Apprise's own privacy mode) everywhere, exports included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from aiposter.core.models import Notification, NotifyChannel, User, utcnow
from aiposter.db import session_scope
from aiposter.logs import fields
from aiposter.services import Invalid, NotFound

log = logging.getLogger("aiposter.notify")

KINDS = ("failed", "partial", "reauth", "quota", "review", "test")
MAX_CHANNELS = 10


def channel_context(user_id: int) -> str:
    """Binds a stored URL to its user: a ciphertext copied onto another account does not decrypt."""
    return f"notify:{user_id}"


# ----------------------------------------------------------------------------------------- queueing


def enqueue(s: Session, user_id: int, kind: str, dedup_key: str, title: str, body: str) -> None:
    """Queue a notification in the caller's transaction; a duplicate key is ignored. Never raises for a
    duplicate, so it is safe on any path of the pipeline."""
    values = {"user_id": user_id, "kind": kind, "dedup_key": dedup_key[:200], "title": title[:250],
              "body": body[:4000], "status": "pending", "attempts": 0, "created_at": utcnow()}
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(Notification).values(**values).on_conflict_do_nothing(
        index_elements=["user_id", "dedup_key"]))


def post_finished(s: Session, post, status: str) -> None:
    if status not in ("failed", "partial"):
        return
    what = "failed" if status == "failed" else "was only partly published"
    enqueue(s, post.user_id, status, f"post:{post.id}:{status}:{post.step_attempts}:{post.finished_at}",
            f"Post {post.id} {what}", f"{post.file_name}: {post.last_error or status}")


def connection_needs_reauth(s: Session, connection) -> None:
    day = utcnow().date().isoformat()
    enqueue(s, connection.user_id, "reauth", f"connection:{connection.id}:reauth:{day}",
            f"Reconnect your {connection.provider} account",
            f"The {connection.provider} account {connection.account_name or connection.account_id} needs to be "
            f"connected again; posts to it wait until then. {connection.last_error or ''}".strip())


def quota_exhausted(s: Session, user_id: int, scope: str, reason: str) -> None:
    day = utcnow().date().isoformat()
    enqueue(s, user_id, "quota", f"quota:{scope}:{day}", f"Quota exhausted: {scope.replace(':', ' ', 1)}",
            f"{reason} Posts wait until it is available again.")


def awaiting_review(s: Session, post) -> None:
    enqueue(s, post.user_id, "review", f"review:{post.id}:{post.review_expires_at}",
            f"Post {post.id} waits for your review", f"{post.file_name}: approve or reject it before "
            f"{post.review_expires_at:%Y-%m-%d %H:%M} UTC")


# ----------------------------------------------------------------------------------------- channels


def _apprise():
    import apprise

    return apprise


def mask(url: str) -> str:
    """Enough of the URL to recognise it, none of its secrets: Apprise's privacy mode (which hides
    passwords and tokens it knows of), then only the scheme and host are kept, because a generic webhook's
    path or query is often the secret itself. Unparseable: only the scheme."""
    scheme = url.split("://", 1)[0][:20]
    try:
        obj = _apprise().Apprise.instantiate(url)
        shown = obj.url(privacy=True) if obj else None
    except Exception:  # noqa: BLE001 - masking must never leak the URL because parsing failed
        shown = None
    if not shown or "://" not in shown:
        return f"{scheme}://***"
    head, _, rest = shown.partition("://")
    host, sep, tail = rest.partition("/")
    host = host.split("?", 1)[0]
    return f"{head}://{host}" + ("/…" if (sep and tail) or "?" in rest else "")


def add_channel(s: Session, keyring, user: User, url: str, label: str = "") -> NotifyChannel:
    url = url.strip()
    if not url or len(url) > 2000:
        raise Invalid("give an Apprise URL (at most 2000 characters), e.g. ntfy://topic or "
                      "json://host/path", field="url")
    if _apprise().Apprise.instantiate(url) is None:
        raise Invalid(f"not an Apprise URL this server can send to: {mask(url)}", field="url")
    n = s.execute(sa.select(sa.func.count()).select_from(NotifyChannel)
                  .where(NotifyChannel.user_id == user.id)).scalar_one()
    if n >= MAX_CHANNELS:
        raise Invalid(f"at most {MAX_CHANNELS} notification URLs per account", field="url")
    ch = NotifyChannel(user_id=user.id, label=label.strip()[:100],
                       url=keyring.encrypt(url, context=channel_context(user.id)))
    s.add(ch)
    s.flush()
    return ch


def list_channels(s: Session, user: User) -> list[NotifyChannel]:
    return list(s.exec(select(NotifyChannel).where(NotifyChannel.user_id == user.id).order_by(NotifyChannel.id)))


def channel_dict(ch: NotifyChannel, keyring) -> dict:
    try:
        shown = mask(keyring.decrypt(ch.url, context=channel_context(ch.user_id)))
    except Exception:  # noqa: BLE001 - a key that is gone: say so, never the ciphertext
        shown = "(cannot be decrypted with this server's keys)"
    return {"id": ch.id, "label": ch.label, "url": shown,
            "created_at": ch.created_at.isoformat(timespec="seconds")}


def remove_channel(s: Session, user: User, channel_id: int) -> None:
    ch = s.get(NotifyChannel, channel_id)
    if ch is None or ch.user_id != user.id:
        raise NotFound(f"no notification URL {channel_id}")
    s.delete(ch)


def recent(s: Session, user: User, limit: int = 50) -> list[Notification]:
    return list(s.exec(select(Notification).where(Notification.user_id == user.id)
                       .order_by(Notification.id.desc()).limit(limit)))


def notification_dict(n: Notification) -> dict:
    return {"id": n.id, "kind": n.kind, "title": n.title, "body": n.body, "status": n.status,
            "attempts": n.attempts, "last_error": n.last_error,
            "created_at": n.created_at.isoformat(timespec="seconds"),
            "sent_at": n.sent_at.isoformat(timespec="seconds") if n.sent_at else None}


# ----------------------------------------------------------------------------------------- sending


@dataclass
class Delivery:
    ok: bool
    error: str | None = None


def send(urls: list[str], title: str, body: str, timeout: float) -> Delivery:
    """One message to every URL through Apprise; ok if at least one receiver took it."""
    apprise = _apprise()
    asset = apprise.AppriseAsset(async_mode=False)
    a = apprise.Apprise(asset=asset)
    for url in urls:
        obj = apprise.Apprise.instantiate(url, asset=asset)
        if obj is None:
            continue
        # Bound every receiver: a dead one must cost seconds, not minutes.
        obj.socket_connect_timeout = obj.socket_read_timeout = timeout
        a.add(obj)
    if not len(a):
        return Delivery(False, "no usable notification URL")
    try:
        ok = a.notify(title=title, body=body)
    except Exception as exc:  # noqa: BLE001 - a receiver's bug is a failed delivery, logged
        return Delivery(False, f"{exc.__class__.__name__}: {exc}")
    return Delivery(bool(ok), None if ok else "the receiver refused it or did not answer")


def send_test(s: Session, keyring, cfg, user: User) -> Delivery:
    """A sample message to every URL of the user, now (for `aiposter notify test`)."""
    urls = _urls(s, keyring, user.id)
    if not urls:
        raise Invalid("no notification URL on this account: add one first", field="url")
    result = send(urls, "aiposter: test notification",
                  "This is a test. You will hear here about failed posts, accounts to reconnect, exhausted "
                  "quotas and posts waiting for your review.", cfg.notify.timeout_seconds)
    log.info("notify.test", extra=fields(user_id=user.id, ok=result.ok, error=result.error))
    return result


def _urls(s: Session, keyring, user_id: int) -> list[str]:
    out = []
    for ch in s.exec(select(NotifyChannel).where(NotifyChannel.user_id == user_id).order_by(NotifyChannel.id)):
        try:
            out.append(keyring.decrypt(ch.url, context=channel_context(user_id)))
        except Exception:  # noqa: BLE001
            log.warning("notify.channel_undecryptable", extra=fields(channel_id=ch.id))
    return out


def digest(rows: list[Notification]) -> tuple[str, str]:
    """One message for everything pending: a single item as itself, several as a list (reviews first
    summarised: "3 posts wait for your review")."""
    if len(rows) == 1:
        return rows[0].title, rows[0].body
    reviews = [r for r in rows if r.kind == "review"]
    others = [r for r in rows if r.kind != "review"]
    lines = [f"- {r.title}: {r.body}" for r in others]
    if reviews:
        lines.append(f"- {len(reviews)} post(s) wait for your review: "
                     + ", ".join(r.title.split(" ")[1] for r in reviews))
    title = f"aiposter: {len(others)} alert(s)" if others else f"aiposter: {len(reviews)} post(s) to review"
    if others and reviews:
        title = f"aiposter: {len(others)} alert(s), {len(reviews)} post(s) to review"
    return title, "\n".join(lines)


def deliver_due(engine: Engine, keyring, cfg, owner: str, now: datetime | None = None) -> int:
    """Send each user's pending notifications as one message; returns how many messages were sent."""
    now = now or utcnow()
    n = cfg.notify
    with session_scope(engine) as s:
        users = list(s.execute(sa.select(Notification.user_id).where(Notification.status == "pending")
                               .group_by(Notification.user_id).limit(100)).scalars())
    sent = 0
    for user_id in users:
        claimed = _claim(engine, user_id, owner, n, now)
        if not claimed:
            continue
        with session_scope(engine) as s:
            rows = list(s.exec(select(Notification).where(Notification.id.in_(claimed)).order_by(Notification.id)))
            urls = _urls(s, keyring, user_id)
        if not urls:
            _finish(engine, claimed, owner, "failed", "no notification URL on the account", now)
            continue
        title, body = digest(rows)
        result = send(urls, title, body, n.timeout_seconds)
        if result.ok:
            _finish(engine, claimed, owner, "sent", None, utcnow())
            sent += 1
        else:
            log.warning("notify.failed", extra=fields(user_id=user_id, error=result.error))
            _retry(engine, claimed, owner, n.max_attempts, result.error)
    return sent


def _claim(engine: Engine, user_id: int, owner: str, n, now: datetime) -> list[int]:
    """The user's pending rows, leased to ``owner``; none if a message went to them too recently or
    another worker is sending to them now."""
    with session_scope(engine) as s:
        last = s.execute(sa.select(sa.func.max(Notification.sent_at)).where(
            Notification.user_id == user_id, Notification.status == "sent", Notification.kind != "test")).scalar()
        if last is not None and now - last < timedelta(seconds=n.min_interval_seconds):
            return []
        busy = s.execute(sa.select(sa.func.count()).select_from(Notification).where(
            Notification.user_id == user_id, Notification.lease_owner.is_not(None),
            Notification.lease_owner != owner, Notification.lease_expires_at > now)).scalar_one()
        if busy:
            return []
        expires = now + timedelta(seconds=n.timeout_seconds * 3 + 30)
        ids = list(s.execute(sa.select(Notification.id).where(
            Notification.user_id == user_id, Notification.status == "pending").order_by(Notification.id)
            .limit(50)).scalars())
        claimed = []
        for i in ids:
            r = s.execute(sa.update(Notification).where(
                Notification.id == i, Notification.status == "pending",
                sa.or_(Notification.lease_expires_at.is_(None), Notification.lease_expires_at < now))
                .values(lease_owner=owner, lease_expires_at=expires))
            if r.rowcount == 1:
                claimed.append(i)
        return claimed


def _finish(engine: Engine, ids: list[int], owner: str, status: str, error: str | None, at: datetime) -> None:
    with session_scope(engine) as s:
        s.execute(sa.update(Notification).where(Notification.id.in_(ids), Notification.lease_owner == owner)
                  .values(status=status, last_error=error, sent_at=at if status == "sent" else None,
                          attempts=Notification.attempts + 1, lease_owner=None, lease_expires_at=None))


def _retry(engine: Engine, ids: list[int], owner: str, max_attempts: int, error: str | None) -> None:
    with session_scope(engine) as s:
        base = sa.update(Notification).where(Notification.id.in_(ids), Notification.lease_owner == owner)
        s.execute(base.where(Notification.attempts + 1 >= max_attempts).values(
            status="failed", last_error=error, attempts=Notification.attempts + 1, lease_owner=None,
            lease_expires_at=None))
        s.execute(base.values(last_error=error, attempts=Notification.attempts + 1, lease_owner=None,
                              lease_expires_at=None))
