"""The Meta destinations wired into the real pipeline, against the fake Graph and Threads servers, with
images fetched by the fakes from the daemon's own signed media route (the API on port 0).

Covers: one post on Facebook, Instagram and Threads through containers IN_PROGRESS → FINISHED; a
container in ERROR and a rejected image failing only their own target; quota used up → the account
waits with the reason and no container is made; a revoked token → needs_reauth, held, resumed by
reconnecting without spending attempts; a publish that commits then drops its connection reconciled
exactly once; a missing/blocked public URL as a clear reason; refusing targets of unusable connections;
images outside Instagram's/Threads' aspect range fitted per watch (pad, crop); `config check`'s probe of
the real media route and of a misbehaving proxy.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import make_config
from fakes.meta import (
    APP_ID,
    APP_SECRET,
    THREADS_APP_ID,
    THREADS_APP_SECRET,
    FakeGraph,
    FakeThreads,
    MediaServer,
    commit_then_drop,
    graph_error,
)
from helpers import drain, jpeg_bytes, write_image
from PIL import Image
from sqlmodel import select

from aiposter.core import credentials, states
from aiposter.core.models import Connection, Post, PostEvent, PostTarget, Watch, utcnow
from aiposter.db import session_scope
from aiposter.services import connections, oauth, users, watches

PAGE, IG, TH = "1010", "1789", "2020"


@pytest.fixture
def fakes():
    g, t = FakeGraph(), FakeThreads()
    yield g, t
    g.close()
    t.close()


def meta_config(tmp_path, db_url, g, t, **sections):
    extra = {
        "oauth": {"meta": {"app_id": APP_ID, "app_secret": APP_SECRET},
                  "threads": {"app_id": THREADS_APP_ID, "app_secret": THREADS_APP_SECRET}},
        "publishers": {"outbox": {"directory": str(tmp_path / "outbox")},
                       "meta": {"graph_url": g.url, "graph_version": "v21.0", "threads_url": t.url,
                                "instagram_poll_seconds": 0, "threads_poll_seconds": 0,
                                "facebook_settle_seconds": 0, "connect_timeout_seconds": 2,
                                "read_timeout_seconds": 2, "probe_timeout_seconds": 5}},
        "api": {"enabled": True, "port": 0, "access_log": False},
    }
    for k, v in sections.items():
        extra.setdefault(k, {}).update(v)
    return make_config(tmp_path, db_url, **extra)


class Install:
    """An opened app serving its API (media route) on a real port, a pipeline context whose media URLs
    point at it, and connected Facebook, Instagram and Threads accounts on the fakes."""

    def __init__(self, tmp_path, db_url, g: FakeGraph, t: FakeThreads, **sections):
        from aiposter.api.server import start_server
        from aiposter.app import open_app
        from aiposter.core.pipeline import Context

        self.g, self.t = g, t
        cfg = meta_config(tmp_path, db_url, g, t, **sections)
        self.app = open_app(cfg, migrate=False)
        self.server = start_server(self.app)
        cfg = cfg.model_copy(update={"api": cfg.api.model_copy(
            update={"public_url": f"http://127.0.0.1:{self.server.port}"})})
        self.cfg = cfg
        self.ctx = Context(cfg, self.app.engine, owner=f"test-{uuid.uuid4().hex[:6]}", keyring=self.app.keyring)
        self.page_token = g.add_page(PAGE, "Bakery", ig_id=IG, ig_username="bakery.ig")
        g.quota_total[IG] = 25
        self.threads_token = t.add_user(TH, "bakery.threads", age=2 * 86400)
        with session_scope(self.app.engine) as s:
            self.user = users.create_user(s, "ann@example.com", "correct horse battery")
            self.uid = self.user.id
            self.conn = {}
            for provider, acc in (
                    ("facebook", oauth.Account(PAGE, "Bakery", {"access_token": self.page_token}, [])),
                    ("instagram", oauth.Account(IG, "bakery.ig", {"access_token": self.page_token,
                                                                  "page_id": PAGE}, [])),
                    ("threads", oauth.Account(TH, "bakery.threads", {"access_token": self.threads_token,
                                                                     "user_id": TH}, []))):
                [c] = connections.store(s, self.app.keyring, self.uid, provider, [acc])
                self.conn[provider] = c.id

    def close(self):
        self.server.stop()
        self.app.close()

    def watch(self, inbox, platforms=("facebook", "instagram", "threads"), **spec) -> int:
        inbox.mkdir(parents=True, exist_ok=True)
        with session_scope(self.app.engine) as s:
            owner = users.get_user_by_email(s, "ann@example.com")
            w = watches.create_watch(s, self.cfg, owner, watches.WatchSpec(
                folder=str(inbox), targets=[f"{p}:{self.conn[p]}" for p in platforms], **spec),
                allow_any_folder=True)
            wid = w.id
        drain(self.ctx)
        return wid

    def due(self, wid):
        with session_scope(self.app.engine) as s:
            s.execute(sa.update(Watch).where(Watch.id == wid).values(next_poll_at=utcnow()))

    def run(self, rounds=60):
        drain(self.ctx, rounds)

    def targets(self) -> dict[str, PostTarget]:
        with session_scope(self.app.engine) as s:
            return {t.platform: t for t in s.exec(select(PostTarget).order_by(PostTarget.id))}

    def posts(self) -> list[Post]:
        with session_scope(self.app.engine) as s:
            return list(s.exec(select(Post).order_by(Post.id)))

    def run_until_published(self, rounds: int) -> None:
        """Make every waiting step due and run, up to ``rounds`` times, until the first post is published
        (retries and reconciliation wait for their backoff otherwise)."""
        for _ in range(rounds):
            self.make_all_due()
            self.run(5)
            if self.posts()[0].status == states.PUBLISHED:
                return

    def make_all_due(self):
        now = utcnow()
        with session_scope(self.app.engine) as s:
            s.execute(sa.update(Post).values(next_attempt_at=now))
            s.execute(sa.update(PostTarget).values(next_attempt_at=now))


@pytest.fixture
def install(tmp_path, db_url, fakes):
    inst = Install(tmp_path, db_url, *fakes)
    yield inst
    inst.close()


def _photo(size=(600, 500)) -> bytes:
    return jpeg_bytes(size=size)


def test_one_photo_on_all_three_through_containers_and_the_media_route(install, tmp_path):
    g, t = install.g, install.t
    g.container_steps = t.container_steps = 2  # IN_PROGRESS twice, then FINISHED
    wid = install.watch(tmp_path / "inbox")
    write_image(tmp_path / "inbox", "loaf.jpg", _photo())
    install.due(wid)
    install.run()
    [post] = install.posts()
    assert post.status == states.PUBLISHED, (post.last_error, {p: x.last_error for p, x in install.targets().items()})
    ts = install.targets()
    # exactly once on each platform, with ids and permalinks recorded
    assert len(g.page_posts(PAGE)) == 1 and g.page_posts(PAGE)[0]["id"] == ts["facebook"].platform_post_id
    assert [m["id"] for m in g.media_of(IG)] == [ts["instagram"].platform_post_id]
    assert [m["id"] for m in t.media_of(TH)] == [ts["threads"].platform_post_id]
    assert all(x.platform_url for x in ts.values())
    assert ts["instagram"].container_id and ts["threads"].container_id
    # the fakes fetched the image from the daemon's signed route, as Meta's crawler
    fetched = g.fetches + t.fetches
    assert fetched and all(f"127.0.0.1:{install.server.port}/media/{post.id}/" in f["url"] for f in fetched)
    # the bytes are gone, and so is the link
    assert not install.ctx.media.exists(f"{post.id}.jpg")
    import httpx
    assert httpx.get(fetched[0]["url"]).status_code == 404


def test_container_error_fails_only_its_target(install, tmp_path):
    g, t = install.g, install.t
    t.container_outcome, t.container_error = "ERROR", "UNKNOWN"
    wid = install.watch(tmp_path / "inbox")
    write_image(tmp_path / "inbox", "tall.jpg", _photo(size=(300, 900)))  # 1:3, outside 4:5..1.91:1
    install.due(wid)
    install.run()
    [post] = install.posts()
    ts = install.targets()
    assert ts["facebook"].status == states.T_PUBLISHED  # Facebook takes any aspect; never blocked
    assert ts["instagram"].status == states.T_PUBLISHED  # padded to 4:5 (the watch's default fit)
    assert ts["threads"].status == states.T_FAILED and "ERROR" in ts["threads"].last_error
    assert post.status == states.PARTIAL
    assert g.publish_count(IG) == 1 and t.publish_count(TH) == 0


# Per shape: the size prepared (the source is under images.max_edge, so as it is), and what Instagram
# (4:5..1.91:1) and Threads (1:10..10:1) receive with each fit; None: the prepared image as it is.
FITTED = {
    "panorama 3:1": ((1800, 600), {"pad": {"instagram": (1800, 943), "threads": None},
                                   "crop": {"instagram": (1146, 600), "threads": None}}),
    "tall 9:16": ((450, 800), {"pad": {"instagram": (640, 800), "threads": None},
                               "crop": {"instagram": (450, 562), "threads": None}}),
    "strip 15:1": ((1500, 100), {"pad": {"instagram": (1500, 786), "threads": (1500, 150)},
                                 "crop": {"instagram": (191, 100), "threads": (1000, 100)}}),
}


@pytest.mark.parametrize("fit", ["pad", "crop"])
@pytest.mark.parametrize("shape", list(FITTED))
def test_an_image_outside_the_aspect_range_is_fitted_per_destination(install, tmp_path, shape, fit):
    g, t = install.g, install.t
    size, expected = FITTED[shape]
    wid = install.watch(tmp_path / "inbox", fit=fit)
    write_image(tmp_path / "inbox", "wide.jpg", _photo(size=size))
    install.due(wid)
    install.run()
    [post] = install.posts()
    assert post.status == states.PUBLISHED, {p: x.last_error for p, x in install.targets().items()}
    assert (post.width, post.height) == size
    [fb] = g.page_posts(PAGE)
    assert fb["image_size"] == size  # Facebook takes any aspect: the original shape
    received = {"instagram": [c for c in g.containers.values() if c.owner == IG],
                "threads": [c for c in t.containers.values() if c.owner == TH]}
    for platform, want in expected[fit].items():
        [container] = received[platform]
        assert container.image_size == (want or size), platform
        # fetched through the signed route, from the variant's own link when there is one
        variant = f"/media/{post.id}/{platform}/" if want else f"/media/{post.id}/"
        assert any(variant in f["url"] for f in (g if platform == "instagram" else t).fetches)
    # every copy is deleted with the post
    assert not any(p.name.split(".")[0] == str(post.id) for p in install.ctx.media.directory.iterdir())


def test_a_fitted_copy_gone_missing_is_made_again_from_the_prepared_image(install, tmp_path):
    from aiposter.services import audit, review

    g = install.g
    wid = install.watch(tmp_path / "inbox", platforms=("instagram",), fit="crop", approval="review")
    write_image(tmp_path / "inbox", "pano.jpg", _photo(size=(1800, 600)))
    install.due(wid)
    install.run()
    [post] = install.posts()
    assert post.status == states.AWAITING_REVIEW
    key = f"{post.id}.instagram.jpg"
    assert install.ctx.media.exists(key)
    install.ctx.media.local_path(key).unlink()  # e.g. a post prepared before its watch had Instagram
    with session_scope(install.app.engine) as s:
        review.approve(s, s.get(Post, post.id), audit.OPERATOR)
    install.run()
    assert install.posts()[0].status == states.PUBLISHED
    [container] = [c for c in g.containers.values() if c.owner == IG]
    assert container.image_size == (1146, 600)


def test_quota_used_up_defers_with_reason_and_makes_no_container(install, tmp_path):
    g = install.g
    g.quota_total[IG] = 1
    g.publishes[IG] = [g.now() - 3600]  # the day's one publish was spent an hour ago
    wid = install.watch(tmp_path / "inbox", platforms=("instagram",))
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    install.due(wid)
    install.run(10)
    ts = install.targets()
    ig = ts["instagram"]
    assert ig.status == states.T_PENDING and ig.attempts == 0
    assert ig.paused_by == f"connection:{install.conn['instagram']}"
    assert "publishing limit" in ig.last_error and "waiting" in ig.last_error
    assert ig.next_attempt_at > utcnow()
    assert g.calls("media") == []
    assert not any(c.owner == IG for c in g.containers.values())


def test_revoked_token_waits_for_reconnect_then_resumes(install, tmp_path):
    t = install.t
    t.revoke(install.threads_token, 460)
    wid = install.watch(tmp_path / "inbox")
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    install.due(wid)
    install.run(15)
    ts = install.targets()
    assert ts["facebook"].status == ts["instagram"].status == states.T_PUBLISHED  # not blocked by Threads
    th = ts["threads"]
    assert th.status == states.T_PENDING and th.attempts == 0
    assert th.paused_by == f"connection:{install.conn['threads']}"
    assert "reconnect" in th.last_error
    with session_scope(install.app.engine) as s:
        c = s.get(Connection, install.conn["threads"])
        assert c.status == credentials.NEEDS_REAUTH and "password" in (c.last_error or "")
    # still held on later rounds, nothing spent
    install.make_all_due()
    install.run(5)
    assert install.targets()["threads"].attempts == 0 and t.publish_count(TH) == 0
    # reconnecting with a fresh token releases it at once
    fresh = t.add_user(TH, "bakery.threads", age=2 * 86400)
    with session_scope(install.app.engine) as s:
        connections.store(s, install.app.keyring, install.uid, "threads",
                          [oauth.Account(TH, "bakery.threads", {"access_token": fresh, "user_id": TH}, [])])
    install.run()
    assert install.targets()["threads"].status == states.T_PUBLISHED
    assert len(t.media_of(TH)) == 1
    assert install.posts()[0].status == states.PUBLISHED


def test_publish_that_commits_then_drops_is_reconciled_exactly_once(install, tmp_path):
    g, t = install.g, install.t
    g.fail("media_publish", commit_then_drop())
    t.fail("threads_publish", commit_then_drop())
    g.fail("photos", commit_then_drop())
    wid = install.watch(tmp_path / "inbox")
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    install.due(wid)
    install.run_until_published(20)
    [post] = install.posts()
    assert post.status == states.PUBLISHED, {p: x.last_error for p, x in install.targets().items()}
    assert len(g.page_posts(PAGE)) == 1
    assert g.publish_count(IG) == 1 and len(g.media_of(IG)) == 1
    assert t.publish_count(TH) == 1 and len(t.media_of(TH)) == 1
    ts = install.targets()
    assert ts["instagram"].platform_post_id == g.media_of(IG)[0]["id"]
    assert ts["threads"].platform_post_id == t.media_of(TH)[0]["id"]


def test_a_published_target_whose_record_is_lost_with_the_next_targets_transaction_is_adopted_once(
        install, tmp_path):
    """A target's "published" record is written in the next target's first transaction. If that transaction
    never commits (here the database connection fails on its first statement after Facebook published), the
    Facebook target is still in flight: the next round asks the Page, adopts the post it finds, and
    sends nothing again."""
    g, t = install.g, install.t
    wid = install.watch(tmp_path / "inbox")
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    install.due(wid)
    pause_checks = []

    def drop_second_hold_check(conn, cursor, statement, params, context, executemany):
        if "pause.scope IN" in statement:  # a target's hold check (pauses.any_of)
            pause_checks.append(statement)
            if len(pause_checks) == 2:  # the Instagram target's first transaction, after Facebook published
                raise sa.exc.OperationalError(statement, params, Exception("server closed the connection"))

    sa.event.listen(install.app.engine, "before_cursor_execute", drop_second_hold_check)
    try:
        install.run(3)
    finally:
        sa.event.remove(install.app.engine, "before_cursor_execute", drop_second_hold_check)
    assert len(pause_checks) >= 2
    assert len(g.page_posts(PAGE)) == 1  # Facebook published; its record was lost with the transaction
    fb = install.targets()["facebook"]
    assert fb.status == states.T_PUBLISHING and fb.step_started_at is not None  # in flight: reconcile first
    install.run_until_published(10)
    [post] = install.posts()
    assert post.status == states.PUBLISHED, {p: x.last_error for p, x in install.targets().items()}
    assert len(g.page_posts(PAGE)) == 1 and len(g.media_of(IG)) == 1 and len(t.media_of(TH)) == 1
    ts = install.targets()
    assert ts["facebook"].platform_post_id == g.page_posts(PAGE)[0]["id"]
    with session_scope(install.app.engine) as s:
        messages = [e.message for e in s.exec(select(PostEvent).where(PostEvent.target_id == ts["facebook"].id))]
    assert any("confirmed after an interrupted attempt" in m for m in messages), messages


def test_rate_limit_pauses_the_account_with_the_time_it_frees(install, tmp_path):
    g = install.g
    g.fail("photos", graph_error(32, message="Page request limit reached", headers={
        "X-Business-Use-Case-Usage": json.dumps({PAGE: [{
            "type": "pages", "call_count": 100, "total_cputime": 10, "total_time": 10,
            "estimated_time_to_regain_access": 7}]})}))
    wid = install.watch(tmp_path / "inbox", platforms=("facebook",))
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    install.due(wid)
    install.run(5)
    fb = install.targets()["facebook"]
    assert fb.status == states.T_PENDING and fb.attempts == 0
    assert fb.paused_by == f"connection:{install.conn['facebook']}"
    assert "paused until" in fb.last_error and "limit" in fb.last_error.lower()
    assert (fb.next_attempt_at - utcnow()).total_seconds() > 5 * 60  # Meta's estimate: 7 minutes
    assert g.page_posts(PAGE) == []


def test_no_public_url_is_a_clear_reason_on_the_target(tmp_path, db_url, fakes):
    """A media route that is not reachable as an image (here: a 404 at the public URL) is named as such
    before any container is made; Facebook (multipart upload) is unaffected."""
    inst = Install(tmp_path, db_url, *fakes)
    try:
        cfg = inst.cfg.model_copy(update={"api": inst.cfg.api.model_copy(
            update={"public_url": f"http://127.0.0.1:{inst.server.port}/not-here"})})
        from aiposter.core.pipeline import Context
        inst.ctx = Context(cfg, inst.app.engine, owner="t-nourl", keyring=inst.app.keyring)
        wid = inst.watch(tmp_path / "inbox")
        write_image(tmp_path / "inbox", "a.jpg", _photo())
        inst.due(wid)
        inst.run(10)
        ts = inst.targets()
        assert ts["facebook"].status == states.T_PUBLISHED
        for p in ("instagram", "threads"):
            assert ts[p].status == states.T_PENDING and ts[p].paused_by == f"destination:{p}"
            assert "cannot fetch the image" in ts[p].last_error and "404" in ts[p].last_error
        assert not fakes[0].containers and not fakes[1].containers
    finally:
        inst.close()


def test_targets_of_unusable_connections_are_refused(install, tmp_path):
    (tmp_path / "x").mkdir()
    with session_scope(install.app.engine) as s:
        credentials.mark(s, install.cfg, install.conn["threads"], credentials.NEEDS_REAUTH, "token revoked")
    with session_scope(install.app.engine) as s:
        owner = users.get_user_by_email(s, "ann@example.com")
        with pytest.raises(watches.Invalid, match="needs to be reconnected.*token revoked"):
            watches.create_watch(s, install.cfg, owner, watches.WatchSpec(
                folder=str(tmp_path / "x"), targets=[f"threads:{install.conn['threads']}"]),
                allow_any_folder=True)


def test_instagram_rejects_a_non_jpeg_served_as_jpeg_and_nothing_else_is_blocked(install, tmp_path):
    """The probe sees a PNG behind image/jpeg before the container: clear reason, no container."""
    # The pipeline always prepares JPEG; simulate a proxy rewriting the image by replacing stored bytes.
    wid = install.watch(tmp_path / "inbox", platforms=("instagram",))
    write_image(tmp_path / "inbox", "a.jpg", _photo())
    orig = install.ctx.media.put

    def put(key, src):
        orig(key, src)
        buf = io.BytesIO()
        Image.new("RGB", (600, 500)).save(buf, "PNG")
        install.ctx.media.local_path(key).write_bytes(buf.getvalue())
    install.ctx.media.put = put
    install.due(wid)
    install.run(10)
    ig = install.targets()["instagram"]
    assert ig.status == states.T_PENDING and "does not serve JPEG bytes" in ig.last_error
    assert not install.g.containers


def test_end_to_end_new_image_captioned_by_an_llm_posted_on_all_three(tmp_path, db_url, fakes):
    """A new image in a watched folder → captioned by the (fake) OpenAI API → a post on the Facebook Page,
    the Instagram account and Threads, each with its own caption and the alt text; the bytes are gone."""
    from captioners.fakes import API_KEY, FakeOpenAI, openai_completion

    answer = {"captions": {"facebook": "Sourdough day at the bakery.", "instagram": "Fresh from the oven.",
                           "threads": "Bread o'clock."},
              "hashtags": ["#bakery"], "alt_text": "A round loaf on a wooden board."}
    with FakeOpenAI() as llm:
        llm.reply(openai_completion(json.dumps(answer)))
        inst = Install(tmp_path, db_url, *fakes, captioner={"default": "openai", "openai": {
            "model": "m-test", "api_key": API_KEY, "base_url": llm.base_url, "timeout": 5.0, "max_retries": 0}})
        try:
            g, t = fakes
            g.container_steps = t.container_steps = 1
            wid = inst.watch(tmp_path / "inbox")
            write_image(tmp_path / "inbox", "loaf.jpg", _photo())
            inst.due(wid)
            inst.run()
            [post] = inst.posts()
            assert post.status == states.PUBLISHED, post.last_error
            assert len(llm.requests) == 1
            [fb] = g.page_posts(PAGE)
            [ig] = g.media_of(IG)
            [th] = t.media_of(TH)
            assert fb["message"].startswith("Sourdough day at the bakery.")
            assert ig["caption"].startswith("Fresh from the oven.") and th["caption"].startswith("Bread o'clock.")
            assert fb["alt_text"] == ig["alt_text"] == th["alt_text"] == "A round loaf on a wooden board."
            assert not inst.ctx.media.exists(f"{post.id}.jpg")
            assert not list(inst.ctx.media.directory.iterdir())  # no image bytes left anywhere
        finally:
            inst.close()


def test_connect_import_checks_the_token_then_stores_it(tmp_path, db_url, fakes):
    """``aiposter connect import``: a Threads token is checked against the API (refused: nothing stored,
    the reason shown) and stored encrypted for the user; the printed target works in a watch."""
    import logging
    import os

    from typer.testing import CliRunner

    from aiposter import cli

    g, t = fakes
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    inst = Install(tmp_path, db_url, g, t)
    cfg_file = tmp_path / "cli.toml"
    cfg_file.write_text("\n".join([
        "[db]", f"url = {json.dumps(db_url)}", "[daemon]", f"data_dir = {json.dumps(str(tmp_path / 'data'))}",
        "[quickstart]", "enabled = false",
        "[oauth.threads]", f"app_id = '{THREADS_APP_ID}'", f"app_secret = '{THREADS_APP_SECRET}'",
        "[publishers.meta]", f"threads_url = '{t.url}'"]) + "\n")
    env = {k: None for k in os.environ if k.startswith("AIPOSTER_")}
    try:
        token = t.add_user("3030", "second.threads", age=2 * 86400)
        bad = t.add_user("4040", "revoked.threads")
        t.revoke(bad, 460)
        (tmp_path / "bad.txt").write_text(bad + "\n")
        (tmp_path / "good.txt").write_text(token + "\n")
        res = CliRunner().invoke(cli.app, ["--config", str(cfg_file), "connect", "import", "--platform", "threads",
                                           "--token-file", str(tmp_path / "bad.txt"), "--user", "ann@example.com"],
                                 env=env)
        assert res.exit_code == 1 and "refused" in res.output and "password" in res.output, res.output
        res = CliRunner().invoke(cli.app, ["--config", str(cfg_file), "connect", "import", "--platform", "threads",
                                           "--token-file", str(tmp_path / "good.txt"), "--user", "ann@example.com"],
                                 env=env)
        assert res.exit_code == 0, res.output
        assert "threads account second.threads" in res.output
        with session_scope(inst.app.engine) as s:
            c = s.exec(select(Connection).where(Connection.account_id == "3030")).one()
            assert c.provider == "threads" and c.status == "active" and token not in str(c.credentials)
        creds = credentials.CredentialStore(inst.app.engine, inst.app.keyring, inst.cfg).load(c.id)
        assert creds.secrets == {"access_token": token, "user_id": "3030"}
        with session_scope(inst.app.engine) as s:
            assert s.exec(select(sa.func.count()).select_from(Connection).where(
                Connection.account_id == "4040")).one() == 0
    finally:
        inst.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_housekeeping_refreshes_threads_and_checks_page_tokens(install):
    """Threads: a token a day old is refreshed (new token stored, new reconnect-by date); a younger one is
    left alone. Facebook/Instagram: debug_token finds a revoked Page token → needs_reauth, reason shown."""
    from datetime import timedelta

    from aiposter.core.models import utcnow as now_

    store = credentials.CredentialStore(install.app.engine, install.app.keyring, install.cfg)
    with session_scope(install.app.engine) as s:
        c = s.get(Connection, install.conn["threads"])
        c.token_expires_at = now_() + timedelta(days=58)  # issued two days ago
    before = store.load(install.conn["threads"]).secrets["access_token"]
    install.g.revoke(install.page_token, 460)  # and the Page token was revoked
    counts = credentials.refresh_due(store)
    assert counts["needs_reauth"] == 2
    after = store.load(install.conn["threads"])
    assert after.secrets["access_token"] != before and counts["refreshed"] >= 1
    assert after.token_expires_at > now_() + timedelta(days=59)
    assert install.t.calls("refresh_access_token")
    # the daily debug_token check marked both Page connections
    with session_scope(install.app.engine) as s:
        for p in ("facebook", "instagram"):
            c = s.get(Connection, install.conn[p])
            assert c.status == credentials.NEEDS_REAUTH and "no longer valid" in c.last_error
        assert s.get(Connection, install.conn["threads"]).status == "active"


def test_config_check_warns_about_a_public_url_meta_cannot_reach(tmp_path):
    from aiposter.cli import public_media_warnings
    from aiposter.config import Config

    def cfg(url):
        return Config.model_validate({"oauth": {"meta": {"app_id": "a"}}, "api": {"public_url": url}})

    assert "public_url is empty" in public_media_warnings(cfg(""))[0]
    assert "private address" in public_media_warnings(cfg("http://192.168.1.5:8080"))[0]
    assert "private address" in public_media_warnings(cfg("http://localhost:8080"))[0]
    assert public_media_warnings(cfg("https://poster.example.com")) == []
    assert public_media_warnings(Config()) == []  # no Meta app configured: nothing to say


def test_config_check_probes_the_real_media_route_as_meta_does(install, tmp_path):
    from typer.testing import CliRunner

    from aiposter.cli import app, public_media_probe

    ok, said = public_media_probe(install.cfg)
    assert ok, said
    assert f"fetched a sample image from {install.cfg.api.public_url}/media/" in said
    # the route answered Meta's crawler with a JPEG, for a link signed with the install's key
    toml = tmp_path / "check.toml"  # the install's key (embedded in its data_dir) signs the probe link
    toml.write_text(f'[oauth.meta]\napp_id = "{APP_ID}"\n[api]\npublic_url = "{install.cfg.api.public_url}"\n'
                    f'[daemon]\ndata_dir = "{install.cfg.data_dir}"\n')
    res = CliRunner().invoke(app, ["--config", str(toml), "config", "check"])
    assert f"ok: Meta's crawler fetched a sample image from {install.cfg.api.public_url}/media/" in res.stderr
    # loopback is reachable from here, not from Meta: still said, and the exit says something is wrong
    assert "private address" in res.stderr and res.exit_code == 1, res.output


def test_a_probe_link_is_signed_and_short_lived(install):
    import httpx

    from aiposter.core.media import urls_for

    urls = urls_for(install.cfg, install.app.keyring)
    good = urls.probe_url(utcnow())
    r = httpx.get(good, headers={"User-Agent": "facebookexternalhit/1.1"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
    assert httpx.get(good.replace("/media/probe/", "/media/probe/1").rsplit("/", 1)[0] + "/x.jpg").status_code == 404
    stale = urls.probe_url(utcnow() - timedelta(minutes=2))  # valid for a minute only
    assert httpx.get(stale).status_code == 404


@pytest.mark.parametrize(("mode", "reason"), [
    ("challenge", "serves an HTML page (a login page or a bot challenge?)"),
    ("forbidden", "answers HTTP 403 to Meta's crawler: it refuses Meta's crawler"),
    ("octet", "serves 'application/octet-stream', not image/jpeg"),
    ("login", "serves a redirect to http://127.0.0.1:{port}/login, which is an HTML page"),
])
def test_config_check_says_why_meta_cannot_fetch_through_a_proxy(tmp_path, mode, reason):
    from typer.testing import CliRunner

    from aiposter.cli import app
    from aiposter.crypto import new_key

    server = MediaServer()
    server.mode = mode
    try:
        toml = tmp_path / "check.toml"
        toml.write_text(f'[oauth.threads]\napp_id = "t"\n[api]\npublic_url = "{server.url}"\n'
                        f'[security]\nencryption_key = "{new_key().encode()}"\n'
                        f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n')
        res = CliRunner().invoke(app, ["--config", str(toml), "config", "check", "--json"])
    finally:
        server.close()
    port = server.url.rsplit(":", 1)[1]
    lines = [line for line in res.stderr.splitlines() if "sample image" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: Meta's crawler could not fetch"), res.stderr
    assert reason.format(port=port) in lines[0]
    assert res.exit_code == 1
    assert server.hits and all("facebookexternalhit" in h["user_agent"] for h in server.hits)
    assert json.loads(res.stdout)["api"]["public_url"] == server.url  # the config is still printed


def test_config_check_says_when_nothing_answers_at_the_public_url(tmp_path):
    from typer.testing import CliRunner

    from aiposter.cli import app
    from aiposter.crypto import new_key

    server = MediaServer()
    url = server.url
    server.close()  # the daemon is not running
    toml = tmp_path / "check.toml"
    toml.write_text(f'[oauth.meta]\napp_id = "m"\n[api]\npublic_url = "{url}"\n'
                    f'[security]\nencryption_key = "{new_key().encode()}"\n')
    res = CliRunner().invoke(app, ["--config", str(toml), "config", "check", "--json"])
    assert res.exit_code == 1
    assert f"nothing answers at {url}/media/probe/" in res.stderr and "is the server running" in res.stderr
