"""SIGKILL the real daemon at random points of publishing to Facebook, Instagram and Threads (the fakes run
in this test process, so they outlive every kill; the daemon serves its own signed media route, which the
fakes fetch), many times, and every photo appears exactly once on each platform.

Each run needs at least ``MIN_LANDED`` kills that landed while posts were in flight (both databases run,
so the whole run lands at least twice that)."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections import Counter

import pytest
import sqlalchemy as sa
from fakes.meta import APP_ID, APP_SECRET, THREADS_APP_ID, THREADS_APP_SECRET, FakeGraph, FakeThreads
from test_daemon import STATES_ACTIVE, drop_photo, post_states, start, wait_for, write_config

pytestmark = pytest.mark.slow

MIN_LANDED = 16
MAX_ROUNDS = 40
PAGE, IG, TH = "1010", "1789", "2020"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _targets_in_flight(engine) -> int:
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM post_target WHERE status IN ('pending', 'publishing')")).scalar() or 0
    except sa.exc.DBAPIError:
        return 0


def _setup(cfg_path, g: FakeGraph, t: FakeThreads, inbox) -> None:
    """Migrate, then connect the three accounts and create the watch, as the API would."""
    from aiposter import config
    from aiposter.app import open_app
    from aiposter.db import session_scope
    from aiposter.services import connections, oauth, users, watches

    page_token = g.add_page(PAGE, "Bakery", ig_id=IG, ig_username="bakery.ig")
    threads_token = t.add_user(TH, "bakery.threads", age=2 * 86400)
    cfg = config.load(cfg_path, environ={})
    app = open_app(cfg, migrate=True)
    try:
        with session_scope(app.engine) as s:
            user = users.create_user(s, "ann@example.com", "correct horse battery")
            ids = {}
            for provider, acc in (
                    ("facebook", oauth.Account(PAGE, "Bakery", {"access_token": page_token}, [])),
                    ("instagram", oauth.Account(IG, "bakery.ig", {"access_token": page_token, "page_id": PAGE}, [])),
                    ("threads", oauth.Account(TH, "bakery.threads", {"access_token": threads_token,
                                                                     "user_id": TH}, []))):
                [c] = connections.store(s, app.keyring, user.id, provider, [acc])
                ids[provider] = c.id
            inbox.mkdir(parents=True, exist_ok=True)
            watches.create_watch(s, cfg, user, watches.WatchSpec(
                folder=str(inbox), targets=[f"{p}:{cid}" for p, cid in ids.items()], interval_seconds=1),
                allow_any_folder=True)
    finally:
        app.close()


def test_sigkill_while_publishing_to_meta_posts_each_photo_exactly_once(tmp_path, db_url):
    rng = random.Random(int(os.environ.get("AIPOSTER_CRASH_SEED", "0")) or None)
    g, t = FakeGraph(), FakeThreads()
    g.container_steps = t.container_steps = 1   # one IN_PROGRESS look: a Pending step to be killed in
    port = _free_port()
    inbox = tmp_path / "inbox"
    # Kills every second or so can cut the same first step (quota, probe, container) many times; each
    # cut counts as an attempt (nothing was committed, so it is surely not published): allow for them.
    cfg = write_config(tmp_path, db_url, quickstart="enabled = false", retry="publish_attempts = 100")
    text = cfg.read_text().replace("[api]\nenabled = false", "\n".join([
        "[api]", "enabled = true", f"port = {port}", f"public_url = 'http://127.0.0.1:{port}'", "access_log = false",
        "[oauth.meta]", f"app_id = '{APP_ID}'", f"app_secret = '{APP_SECRET}'",
        "[oauth.threads]", f"app_id = '{THREADS_APP_ID}'", f"app_secret = '{THREADS_APP_SECRET}'",
        "[publishers.meta]", f"graph_url = '{g.url}'", "graph_version = 'v21.0'", f"threads_url = '{t.url}'",
        "instagram_poll_seconds = 0.0", "threads_poll_seconds = 0.0", "facebook_settle_seconds = 0.0",
        "connect_timeout_seconds = 2.0", "read_timeout_seconds = 5.0", "probe_timeout_seconds = 5.0"]))
    cfg.write_text(text)
    engine = sa.create_engine(db_url)
    names: list[str] = []
    landed = 0
    proc = None
    try:
        _setup(cfg, g, t, inbox)
        log = tmp_path / "daemon.log"
        proc = start(cfg, command=("run",), output=log)
        for round_ in range(MAX_ROUNDS):
            if landed >= MIN_LANDED:
                break
            for i in range(2):
                name = f"kill{round_}x{i}.jpg"
                drop_photo(inbox, name, rng, size=(480, 400))
                names.append(name)
            wait_for(lambda: sum(post_states(engine).values()) >= len(names) - 1, 30, "detection")
            time.sleep(rng.uniform(0.0, 0.6))
            in_flight = _targets_in_flight(engine)
            proc.kill()
            proc.wait()
            active = sum(v for k, v in post_states(engine).items() if k in STATES_ACTIVE)
            landed += bool(in_flight and active)
            proc = start(cfg, command=("run",), output=log)
        wait_for(lambda: sum(post_states(engine).get(s, 0) for s in STATES_ACTIVE) == 0
                 and sum(post_states(engine).values()) == len(names), 90, "every post to finish")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        engine.dispose()
        g.close()
        t.close()
    assert landed >= MIN_LANDED, f"only {landed} kills landed mid-publishing"
    assert post_states(sa.create_engine(db_url)) == {"published": len(names)}
    stems = Counter(n.removesuffix(".jpg") for n in names)

    def by_stem(captions) -> Counter:
        return Counter(c.split(" ")[0] for c in captions)

    fb = by_stem(p["message"] for p in g.page_posts(PAGE))
    ig = by_stem(m["caption"] for m in g.media_of(IG))
    th = by_stem(m["caption"] for m in t.media_of(TH))
    assert fb == stems, f"Facebook duplicates or losses: {fb - stems} extra, {stems - fb} missing"
    assert ig == stems, f"Instagram duplicates or losses: {ig - stems} extra, {stems - ig} missing"
    assert th == stems, f"Threads duplicates or losses: {th - stems} extra, {stems - th} missing"
    assert post_states(sa.create_engine(db_url)) == {"published": len(names)}
    assert not list((tmp_path / "data" / "media").iterdir())  # no image bytes left
    print(f"landed kills: {landed} of {len(names) // 2} rounds")
