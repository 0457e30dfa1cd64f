"""Hardening of local files (issue 8): what a user can make the daemon read, and that no photo is lost.

Each test is the regression test of one finding; they drive the real pipeline (poll, download, prepare,
publish to the outbox) on both databases, or the local source directly where the file system is the point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa
from conftest import make_config
from helpers import drain, jpeg_bytes, write_image
from sqlmodel import select

from aiposter.config import Config, ConfigError, load
from aiposter.core import states
from aiposter.core.errors import SourceError
from aiposter.core.models import Post, SourceFile, User, Watch, utcnow
from aiposter.core.ports import WatchRef
from aiposter.db import session_scope
from aiposter.services import Invalid, users, watches
from aiposter.sources.local import LocalSource


def add_watch(ctx, folder, email="ann@example.com", admin=True, **spec) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    with session_scope(ctx.engine) as s:
        try:
            owner = users.get_user_by_email(s, email)
        except users.NotFound:
            owner = users.create_user(s, email, "correct horse battery")
        return watches.create_watch(s, ctx.cfg, owner, watches.WatchSpec(folder=str(folder), **spec),
                                    allow_any_folder=admin).id


def make_due(ctx, wid):
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(Watch).where(Watch.id == wid).values(next_poll_at=utcnow()))


def posts(ctx):
    with session_scope(ctx.engine) as s:
        return list(s.exec(select(Post).order_by(Post.id)))


def watch(ctx, wid) -> dict:
    with session_scope(ctx.engine) as s:
        return watches.watch_dict(s, s.get(Watch, wid))


def ref(folder) -> WatchRef:
    return WatchRef(id=1, user_id=1, folder=str(folder.resolve()))


# --------------------------------------------------------------------------- 1: fetch without symlinks, capped


def test_a_file_swapped_for_a_symlink_after_listing_is_not_read(tmp_path):
    inbox, secret = tmp_path / "inbox", tmp_path / "outside" / "secret.jpg"
    write_image(inbox, "a.jpg")
    write_image(secret.parent, secret.name)
    source = LocalSource(Config())
    assert [f.ref for f in source.list(ref(inbox)).files] == ["a.jpg"]
    (inbox / "a.jpg").unlink()
    (inbox / "a.jpg").symlink_to(secret)  # swapped between listing and fetch (or before a retry)
    dest = tmp_path / "media" / "1.download"
    with pytest.raises(SourceError) as err:
        source.fetch(ref(inbox), "a.jpg", dest, 50 * 1024 * 1024)
    assert err.value.permanent and err.value.code == "not_regular" and "symbolic link" in str(err.value)
    assert not dest.exists()


def test_a_symlinked_directory_on_the_way_is_not_followed(tmp_path):
    home = tmp_path / "home"
    write_image(home / "ann" / "inbox", "a.jpg")
    folder = str((home / "ann" / "inbox").resolve())
    write_image(tmp_path / "elsewhere" / "inbox", "secret.jpg")
    os.rename(home / "ann", tmp_path / "ann-moved")
    (home / "ann").symlink_to(tmp_path / "elsewhere")  # a component of the path, not the folder itself
    source = LocalSource(Config())
    for call in (lambda: source.list(WatchRef(1, 1, folder)),
                 lambda: source.fetch(WatchRef(1, 1, folder), "secret.jpg", tmp_path / "d", 10**8)):
        with pytest.raises(SourceError) as err:
            call()
        assert err.value.code == "escaped" and "symbolic link" in str(err.value)
    assert not (tmp_path / "d").exists()


def test_a_fifo_never_blocks_a_worker(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.jpg")
    outcome: list = []

    def fetch():
        try:
            LocalSource(Config()).fetch(ref(inbox), "pipe.jpg", tmp_path / "d", 10**8)
            outcome.append("read")
        except SourceError as exc:
            outcome.append(exc)

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the stuck open() so the thread can end
        fd = os.open(inbox / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    assert not t.is_alive(), "fetch blocked on a FIFO"
    [exc] = outcome
    assert isinstance(exc, SourceError) and exc.permanent and exc.code == "not_regular"


FILL_DISK = """
import resource, sys
from pathlib import Path
from aiposter.config import Config
from aiposter.core.errors import StepError
from aiposter.core.ports import WatchRef
from aiposter.sources.local import LocalSource
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))  # main copied /dev/zero until the disk filled
try:
    LocalSource(Config()).fetch(WatchRef(1, 1, sys.argv[1]), "zero.jpg", Path(sys.argv[2]), 10 << 20)
    print("copied")
except StepError as exc:
    print(exc.code)
"""


def test_a_symlink_to_dev_zero_does_not_fill_the_disk(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "zero.jpg").symlink_to("/dev/zero")
    dest = tmp_path / "media" / "1.download"
    # A subprocess: the point is the process's file-size limit, which stops the unfixed copy quickly.
    out = subprocess.run([sys.executable, "-c", FILL_DISK, str(inbox.resolve()), str(dest)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "not_regular", out.stdout + out.stderr
    assert not dest.exists() or dest.stat().st_size == 0


def test_the_size_cap_holds_on_the_bytes_read(tmp_path):
    inbox = tmp_path / "inbox"
    write_image(inbox, "big.jpg", b"\xff\xd8" + b"x" * (3 << 20))
    dest = tmp_path / "d"
    with pytest.raises(Exception) as err:
        LocalSource(Config()).fetch(ref(inbox), "big.jpg", dest, 1 << 20)
    assert getattr(err.value, "code", None) == "too_large" and not dest.exists()


# --------------------------------------------------------------------------- 2 and 3: the folder, at every poll


def test_a_folder_replaced_by_a_symlink_later_puts_the_watch_in_error_and_is_not_listed(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    wid = add_watch(ctx, inbox)
    drain(ctx)
    assert watch(ctx, wid)["status"] == "active"
    etc = tmp_path / "etc"
    write_image(etc, "shadow.jpg")
    inbox.rmdir()
    inbox.symlink_to(etc)
    make_due(ctx, wid)
    drain(ctx)
    assert posts(ctx) == []
    assert not any(ctx.cfg.media_dir.iterdir())
    w = watch(ctx, wid)
    assert w["status"] == "error" and "symbolic link" in w["last_poll_error"]
    # Fixed by the user: the next poll reads the folder again.
    inbox.unlink()
    write_image(inbox, "back.jpg")
    make_due(ctx, wid)
    drain(ctx)
    assert watch(ctx, wid)["status"] == "active"
    assert [p.file_name for p in posts(ctx)] == ["back.jpg"]


@pytest.fixture
def per_user(tmp_path, db_url):
    """A context whose local roots are per user: home/<user id> and shared/<email>."""
    from aiposter.app import open_app
    from aiposter.core.pipeline import Context

    cfg = make_config(tmp_path, db_url, sources={"local_roots": [
        str(tmp_path / "home" / "{user_id}"), str(tmp_path / "by-mail" / "{email}")]})
    app = open_app(cfg, migrate=False)
    yield Context(cfg, app.engine, owner="test-per-user")
    app.close()


def test_local_roots_are_per_user(per_user, tmp_path):
    ctx = per_user
    with session_scope(ctx.engine) as s:
        ann = users.create_user(s, "ann@example.com")
        bob = users.create_user(s, "bob@example.com")
        anns = tmp_path / "home" / str(ann.id) / "pics"
        bobs = tmp_path / "home" / str(bob.id) / "pics"
        anns_by_mail = tmp_path / "by-mail" / "ann@example.com"
        for d in (anns, bobs, anns_by_mail):
            d.mkdir(parents=True)
        assert watches.create_watch(s, ctx.cfg, ann, watches.WatchSpec(folder=str(anns)))
        assert watches.create_watch(s, ctx.cfg, ann, watches.WatchSpec(folder=str(anns_by_mail)))
        for folder in (bobs, tmp_path / "home", tmp_path / "by-mail" / "bob@example.com", tmp_path / "nowhere"):
            with pytest.raises(Invalid) as err:
                watches.create_watch(s, ctx.cfg, ann, watches.WatchSpec(folder=str(folder)))
            # Refused before anything is said about the path: no oracle of what exists outside the roots.
            assert err.value.field == "folder" and "does not exist" not in err.value.message
        # An admin (the CLI) may choose any folder for any user.
        assert watches.create_watch(s, ctx.cfg, ann, watches.WatchSpec(folder=str(bobs)), allow_any_folder=True)


def test_a_shared_root_is_refused_in_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[sources]\nlocal_roots = ["/srv/photos"]\n')
    with pytest.raises(ConfigError) as err:
        load(path, environ={})
    assert "local_roots" in str(err.value) and "shared by every user" in str(err.value)
    path.write_text('[sources]\nlocal_roots = ["/srv/photos/{user_id}", "/srv/{email}/in"]\n')
    assert load(path, environ={}).sources.local_roots == ["/srv/photos/{user_id}", "/srv/{email}/in"]


def test_a_user_watch_outside_the_users_roots_stops_at_the_next_poll(per_user, tmp_path):
    """The roots are checked at every poll, for the watch's owner: not only when the watch was made."""
    ctx = per_user
    with session_scope(ctx.engine) as s:
        ann = users.create_user(s, "ann@example.com")
        folder = tmp_path / "home" / str(ann.id)
        folder.mkdir(parents=True)
        wid = watches.create_watch(s, ctx.cfg, ann, watches.WatchSpec(folder=str(folder))).id
    drain(ctx)
    assert watch(ctx, wid)["status"] == "active"
    ctx.cfg.sources.local_roots = [str(tmp_path / "elsewhere" / "{user_id}")]  # the operator moved the roots
    write_image(folder, "new.jpg")
    make_due(ctx, wid)
    drain(ctx)
    w = watch(ctx, wid)
    assert w["status"] == "error" and "outside this account's local folders" in w["last_poll_error"]
    assert posts(ctx) == []


# --------------------------------------------------------------------------- 12, 13: identity by content


def test_a_stalled_copy_is_looked_at_again_once_complete(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    wid = add_watch(ctx, inbox)
    drain(ctx)
    full = jpeg_bytes(size=(120, 90))
    (inbox / "trip.jpg").write_bytes(full[: len(full) // 2])  # the copy paused past settle_seconds
    make_due(ctx, wid)
    drain(ctx)
    [first] = posts(ctx)
    assert first.status == states.FAILED
    (inbox / "trip.jpg").write_bytes(full)  # the copy finished
    make_due(ctx, wid)
    drain(ctx)
    first_again, second = posts(ctx)
    assert first_again.status == states.FAILED
    assert second.status == states.PUBLISHED and second.file_name == "trip.jpg"


def test_a_new_photo_under_a_reused_name_is_posted_and_the_same_bytes_are_not(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    wid = add_watch(ctx, inbox)
    drain(ctx)
    one, two = jpeg_bytes(color=(200, 10, 10)), jpeg_bytes(color=(10, 10, 200))
    (inbox / "image.jpg").write_bytes(one)
    make_due(ctx, wid)
    drain(ctx)
    (inbox / "image.jpg").unlink()
    (inbox / "image.jpg").write_bytes(two)  # the phone's share sheet reuses the name
    make_due(ctx, wid)
    drain(ctx)
    assert [(p.file_name, p.status) for p in posts(ctx)] == [("image.jpg", states.PUBLISHED)] * 2
    # The same bytes again, under another name, or touched in place: seen, not posted twice, and said so.
    (inbox / "image (1).jpg").write_bytes(two)
    earlier = time.time() - 100
    os.utime(inbox / "image.jpg", (earlier, earlier))
    make_due(ctx, wid)
    drain(ctx)
    ps = posts(ctx)
    assert [p.status for p in ps] == [states.PUBLISHED] * 2 + [states.SKIPPED] * 2
    for p in ps[2:]:
        assert f"same photo (identical bytes) as post {ps[1].id}" in p.last_error
    records = sorted(f for f in os.listdir(ctx.cfg.publishers.outbox.directory) if f.endswith(".json"))
    assert len(records) == 2


def test_fingerprints_stored_before_the_inode_was_added_still_match(ctx, tmp_path):
    """An upgrade must not make every known file look changed (and post the whole folder again)."""
    inbox = tmp_path / "inbox"
    write_image(inbox, "old.jpg")
    wid = add_watch(ctx, inbox)
    drain(ctx)
    st = (inbox / "old.jpg").stat()
    with session_scope(ctx.engine) as s:
        s.execute(sa.update(SourceFile).values(fingerprint=f"{st.st_size}:{st.st_mtime_ns}"))
    make_due(ctx, wid)
    drain(ctx)
    assert posts(ctx) == []


# --------------------------------------------------------------------------- 16: baseline at creation


def test_a_photo_landing_before_the_first_poll_is_posted(ctx, tmp_path):
    inbox = tmp_path / "inbox"
    write_image(inbox, "before.jpg")
    before_ctime = (inbox / "before.jpg").stat().st_ctime
    wid = add_watch(ctx, inbox)
    with session_scope(ctx.engine) as s:  # the watch was made just after before.jpg arrived...
        w = s.get(Watch, wid)
        w.baseline_at = w.created_at = utcnow().fromtimestamp(before_ctime + 0.001, utcnow().tzinfo)
    p = write_image(inbox, "between.jpg")  # ...and this one landed before the first poll ran
    os.utime(p, (before_ctime + 0.002, before_ctime + 0.002))
    drain(ctx)
    assert [(p.file_name, p.status) for p in posts(ctx)] == [("between.jpg", states.PUBLISHED)]
    with session_scope(ctx.engine) as s:
        sf = s.exec(select(SourceFile).where(SourceFile.name == "before.jpg")).one()
        assert sf.status == states.SF_BASELINE


# --------------------------------------------------------------------------- 17: crash litter in the outbox


def test_housekeeping_sweeps_outbox_temp_files_left_by_a_kill(ctx):
    from aiposter.core.daemon import Daemon

    outbox = ctx.cfg.publishers.outbox.directory
    os.makedirs(outbox, exist_ok=True)
    old = [os.path.join(outbox, n) for n in (".post-3-4.json.4242.tmp", ".post-3-4.jpg.tmp")]
    fresh = os.path.join(outbox, ".post-5-6.json.4243.tmp")  # a write in progress right now
    keep = os.path.join(outbox, "post-1-1.json")
    for p in old + [fresh, keep]:
        open(p, "w").close()
    hour_ago = time.time() - 3600
    for p in old + [keep]:
        os.utime(p, (hour_ago, hour_ago))
    Daemon(ctx).housekeeping()
    assert sorted(os.listdir(outbox)) == sorted([os.path.basename(fresh), "post-1-1.json"])


def test_user_ids_in_roots_cannot_be_forged_by_email(per_user, tmp_path):
    """{email} is filled in only when the address is one plain path component."""
    ctx = per_user
    with session_scope(ctx.engine) as s:
        u = User(email="a/../../../etc@example.com")
        s.add(u)
        s.flush()
        roots = watches.local_roots(ctx.cfg, u)
    assert roots == [(tmp_path / "home" / str(u.id)).resolve()]
