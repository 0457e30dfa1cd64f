"""Seed a user's data straight through the models and services (no HTTP), for tests that need rows."""

from __future__ import annotations

from aiposter.core import states
from aiposter.core.models import Connection, Post, PostEvent, PostTarget, SourceFile
from aiposter.crypto import connection_context
from aiposter.db import session_scope
from aiposter.services import notify, users, watches


def seed(application, email: str, folder, marker: str) -> dict:
    """A connection, a watch with targets, a seen file, and a failed post with a target and an event."""
    with session_scope(application.engine) as s:
        user = users.get_user_by_email(s, email)
        c = Connection(user_id=user.id, provider="facebook", account_id=f"page-{marker}",
                       account_name=f"Page {marker}")
        s.add(c)
        s.flush()
        c.credentials = application.keyring.encrypt(f'{{"access_token": "secret-{marker}"}}',
                                                    context=connection_context(c.id))
        w = watches.create_watch(s, application.cfg, user, watches.WatchSpec(
            folder=str(folder), name=f"watch {marker}", targets=["outbox", f"facebook:{c.id}"]),
            allow_any_folder=True)  # seeded as an admin would: any user's rows in one shared folder
        sf = SourceFile(watch_id=w.id, ref=f"{marker}.jpg", name=f"{marker}.jpg", status=states.SF_QUEUED)
        s.add(sf)
        s.flush()
        p = Post(user_id=user.id, watch_id=w.id, source_file_id=sf.id, source_ref=sf.ref, file_name=sf.name,
                 status=states.FAILED, last_error=f"facebook: boom {marker}", captions={"facebook": marker})
        s.add(p)
        s.flush()
        t = PostTarget(post_id=p.id, platform="facebook", connection_id=c.id, status=states.T_FAILED,
                       attempts=5, last_error=f"facebook: boom {marker}")
        ok = PostTarget(post_id=p.id, platform="outbox", status=states.T_PUBLISHED,
                        platform_post_id=f"out-{marker}")
        s.add_all([t, ok])
        s.flush()
        s.add(PostEvent(post_id=p.id, target_id=t.id, state=states.T_FAILED, message=f"failed {marker}",
                        actor=f"user:{user.id} {email}"))
        # A notification URL whose secret is the marker, and a queued notification.
        notify.add_channel(s, application.keyring, user, f"json://hooks.example/{marker}-secret", "my hook")
        notify.enqueue(s, user.id, "failed", f"post:{p.id}:failed", f"Post {p.id} failed", f"boom {marker}")
        return {"connection": c.id, "watch": w.id, "post": p.id, "target": t.id, "published_target": ok.id}
