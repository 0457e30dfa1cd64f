"""Data portability: everything stored about a user as one JSON-ready document, without any secret.

Left out on purpose: the password hash, session token hashes, pending OAuth states, pending choices of
Facebook Pages (Page tokens, deleted within 30 minutes) and connection credentials (ciphertext).
Everything else the user owns is in: profile, connections, watches with their targets and the files they
have seen, posts with targets and history.
"""

from __future__ import annotations

from sqlmodel import Session, select

from aiposter.core.models import Post, PostEvent, PostTarget, SourceFile, User, Watch, WatchTarget, utcnow
from aiposter.services import audit, notify
from aiposter.services.audit import OPERATOR, Actor
from aiposter.services.connections import connection_dict, list_connections

FORMAT = "aiposter.export/1"


def _row(obj, exclude: tuple[str, ...] = ()) -> dict:
    data = obj.model_dump(exclude=set(exclude))
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def export_user(s: Session, user: User, actor: Actor = OPERATOR, keyring=None) -> dict:
    # Children are fetched with a join on their owner, not IN (ids): a user may have 100,000 posts.
    watches = list(s.exec(select(Watch).where(Watch.user_id == user.id).order_by(Watch.id)))
    targets = _by(s.exec(select(WatchTarget).join(Watch, Watch.id == WatchTarget.watch_id)
                         .where(Watch.user_id == user.id).order_by(WatchTarget.id)), "watch_id")
    files = _by(s.exec(select(SourceFile).join(Watch, Watch.id == SourceFile.watch_id)
                       .where(Watch.user_id == user.id).order_by(SourceFile.id)), "watch_id")
    posts = list(s.exec(select(Post).where(Post.user_id == user.id).order_by(Post.id)))
    post_targets = _by(s.exec(select(PostTarget).join(Post, Post.id == PostTarget.post_id)
                              .where(Post.user_id == user.id).order_by(PostTarget.id)), "post_id")
    events = _by(s.exec(select(PostEvent).join(Post, Post.id == PostEvent.post_id)
                        .where(Post.user_id == user.id).order_by(PostEvent.id)), "post_id")
    audit.record(s, "data.exported", actor, subject=user, detail=f"{len(watches)} watch(es), {len(posts)} post(s)")
    return {
        "format": FORMAT,
        "exported_at": utcnow().isoformat(timespec="seconds"),
        "profile": _row(user, exclude=("password_hash",)),
        "connections": [connection_dict(c) for c in list_connections(s, user)],
        "watches": [{**_row(w, exclude=("lease_owner", "lease_expires_at")),
                     "targets": [_row(t) for t in targets.get(w.id, [])],
                     "files": [_row(f) for f in files.get(w.id, [])]} for w in watches],
        # Notification URLs carry secrets: masked (without the keyring, only their labels and scheme-less ids).
        "notifications": {
            "channels": [notify.channel_dict(c, keyring) if keyring is not None else
                         {"id": c.id, "label": c.label, "url": "(masked)"} for c in notify.list_channels(s, user)],
            "recent": [notify.notification_dict(n) for n in notify.recent(s, user, limit=1000)],
        },
        "posts": [{**_row(p, exclude=("lease_owner", "lease_expires_at", "media_key")),
                   "targets": [_row(t) for t in post_targets.get(p.id, [])],
                   "events": [_row(e) for e in events.get(p.id, [])]} for p in posts],
    }


def _by(rows, key: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(getattr(r, key), []).append(r)
    return out
