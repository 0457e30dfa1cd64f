"""The web interface in a real browser: Playwright driving Debian's Chromium against a live server (the
API app with its pages, served by uvicorn in a thread) and a scheduler in this process, with the loopback
OAuth fake playing Google's and Meta's consent pages.

One browser for the module, a fresh context (cookies, storage) per test. The server runs on SQLite only:
the pages are database-agnostic and their queries are the services' (tested on both databases elsewhere).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import uvicorn
from conftest import make_config
from helpers import write_image
from sqlmodel import select

from aiposter.api.app import create_app
from aiposter.app import open_app
from aiposter.core.daemon import Daemon
from aiposter.core.models import Post, Watch
from aiposter.core.pipeline import Context
from aiposter.db import session_scope
from aiposter.services import users, watches

pw = pytest.importorskip("playwright.sync_api")

from api.fakes import FakeOAuth, oauth_config  # noqa: E402

CHROMIUM = os.environ.get("AIPOSTER_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 860}, {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class Consent:
    """The providers' consent pages: the user approves at once, and the provider sends the browser back to
    the redirect URI with a code the OAuth fake will accept (:meth:`FakeOAuth.approve`)."""

    def __init__(self, fake: FakeOAuth):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = f"http://{self.headers['Host']}{self.path}"
                code, state = fake.approve(url)
                back = parse_qs(urlparse(url).query)["redirect_uri"][0]
                self.send_response(302)
                self.send_header("Location", f"{back}?{urlencode({'code': code, 'state': state})}")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Live:
    """The server under test: URL, app, daemon, and the OAuth fake."""

    def __init__(self, tmp: Path):
        self.fake = FakeOAuth()
        self.consent = Consent(self.fake)
        oauth = oauth_config(self.fake.url)
        oauth["google"]["auth_uri"] = f"{self.consent.url}/google/auth"
        oauth["meta"]["authorize_url"] = f"{self.consent.url}/facebook/dialog/oauth"
        oauth["threads"]["authorize_url"] = f"{self.consent.url}/threads/oauth/authorize"
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.home = tmp / "home"
        self.cfg = make_config(tmp, f"sqlite:///{tmp / 'web.db'}",
                               sources={"local_roots": [str(self.home / "{email}")]},
                               api={"public_url": self.url}, oauth=oauth,
                               watch_defaults={"settle_seconds": 0.0, "interval_seconds": 1})
        self.app = open_app(self.cfg)
        self.daemon = Daemon(Context(self.cfg, self.app.engine, owner="browser-test", keyring=self.app.keyring))
        self.daemon.start()
        config = uvicorn.Config(create_app(self.app, self.daemon), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.server.started, 20), "the server did not start"

    def user(self, email: str, role: str = "user") -> Path:
        with session_scope(self.app.engine) as s:
            users.create_user(s, email, PASSWORD, role=role)
        folder = self.home / email / "photos"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.daemon.stop(10)
        self.app.close()
        self.fake.close()
        self.consent.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake token endpoint is plain http
    server = Live(tmp_path_factory.mktemp("web"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, live):
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(20_000)
    p = context.new_page()

    yield p
    context.close()


def sign_in(page, live, email: str):
    page.goto(f"{live.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    pw.expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_a_user_connects_accounts_watches_a_folder_and_sees_a_post_published(page, live):
    folder = live.user("ann@example.com")
    sign_in(page, live, "ann@example.com")
    pw.expect(page.get_by_role("heading", name="Get started")).to_be_visible()  # the empty state's next steps

    page.get_by_role("link", name="Drive accounts").click()
    page.get_by_role("button", name="Connect Google Drive").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected")
    pw.expect(page.locator("table")).to_contain_text("Google Drive")

    page.get_by_role("link", name="Social accounts").click()
    page.get_by_role("button", name="Connect Facebook Page (and Instagram)").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected: Bakery")
    pw.expect(page.locator("table")).to_contain_text("Garage")  # every Page the user granted

    page.get_by_role("link", name="Watches").click()
    page.get_by_role("link", name="create your first watch").click()
    page.get_by_label("Name").fill("Shop window")
    page.get_by_label("Folder path, or a Drive folder link").fill(str(folder))
    page.get_by_label("Look for new photos every (minutes)").fill("0.02")
    page.get_by_label("Prompt template").fill("New in {{ folder }}: {{ file_stem }}")
    pw.expect(page.locator("#preview")).to_contain_text("New in Holidays: IMG_0001")  # the live preview
    pw.expect(page.get_by_label("Outbox (files on the server)")).to_be_checked()
    page.get_by_role("button", name="Create watch").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Shop window")
    with session_scope(live.app.engine) as s:
        wid = s.exec(select(Watch).where(Watch.name == "Shop window")).one().id
    assert wait_for(lambda: _baseline_done(live, wid))

    page.get_by_role("link", name="Dashboard").click()
    write_image(folder, "croissant.jpg")
    recent = page.locator("section", has=page.get_by_role("heading", name="Recent activity"))
    pw.expect(recent).to_contain_text("croissant.jpg", timeout=30_000)  # appears without a reload
    pw.expect(recent.locator(".badge")).to_have_text("published", timeout=30_000)
    page.screenshot(path=str(SHOTS / "journey-dashboard.png"))

    recent.get_by_role("link", name="croissant.jpg").click()
    pw.expect(page.locator("#post")).to_contain_text("published")
    pw.expect(page.locator(".timeline")).to_contain_text("published")

    page.get_by_role("link", name="Social accounts").click()
    page.get_by_role("link", name="Disconnect Bakery").first.click()
    pw.expect(page.locator("main")).to_contain_text("stored access tokens")
    page.get_by_role("button", name="Yes, disconnect").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Disconnected Bakery")

    page.get_by_role("link", name="Account", exact=True).click()
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download my data").click()
    doc = json.loads(Path(dl.value.path()).read_text())
    assert doc["profile"]["email"] == "ann@example.com" and any(p["file_name"] == "croissant.jpg" for p in doc["posts"])

    page.get_by_label("Your password, to confirm").fill("not my password")
    page.get_by_role("button", name="Delete my account").click()
    pw.expect(page.locator("#delete_password-error")).to_be_visible()
    page.get_by_label("Your password, to confirm").fill(PASSWORD)
    page.get_by_role("button", name="Delete my account").click()
    pw.expect(page.get_by_role("status")).to_contain_text("were deleted")
    with session_scope(live.app.engine) as s:
        assert s.exec(select(Post).where(Post.watch_id == wid)).first() is None
        assert s.get(Watch, wid) is None


def _baseline_done(live, wid: int) -> bool:
    with session_scope(live.app.engine) as s:
        return s.get(Watch, wid).baseline_done


def test_another_users_post_is_not_found(page, live):
    folder = live.user("bob@example.com")
    live.user("cat@example.com")
    with session_scope(live.app.engine) as s:
        bob = users.get_user_by_email(s, "bob@example.com")
        w = watches.create_watch(s, live.cfg, bob, watches.WatchSpec(folder=str(folder), enabled=False))
        post = Post(user_id=bob.id, watch_id=w.id, source_ref="x.jpg", file_name="x.jpg", status="failed")
        s.add(post)
        s.flush()
        pid = post.id
    sign_in(page, live, "cat@example.com")
    response = page.goto(f"{live.url}/posts/{pid}")
    assert response.status == 404
    pw.expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert "x.jpg" not in page.content()


def _seed_admin_data(live) -> dict:
    """An admin with a watch and a failed post, so that every page has content to check."""
    folder = live.user("root@example.com", role="admin")
    with session_scope(live.app.engine) as s:
        root = users.get_user_by_email(s, "root@example.com")
        w = watches.create_watch(s, live.cfg, root, watches.WatchSpec(folder=str(folder), name="Studio",
                                                                      enabled=False))
        post = Post(user_id=root.id, watch_id=w.id, source_ref="a.jpg", file_name="a.jpg", folder_name="photos",
                    status="failed", last_error="the outbox directory is not writable")
        s.add(post)
        s.flush()
        return {"watch": w.id, "post": post.id}


def _keyboard_reaches_everything(page) -> None:
    """Tab from the top of the page reaches every visible control (a radio group is one stop: arrows move in
    it), and the first stop is the skip link."""
    controls = page.evaluate("""() => [...document.querySelectorAll(
        'a[href], button, input:not([type=hidden]):not([hidden]), select, textarea, summary')]
        .filter(e => e.checkVisibility({visibilityProperty: true}))
        .filter(e => !(e.type === 'radio' && !e.checked)).length""")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    seen = set()
    for _ in range(controls + 5):
        seen.add(page.evaluate("""() => { const e = document.activeElement;
            return e.tagName + '|' + (e.getAttribute('href') || e.name || e.id || '') + '|' + e.textContent.trim()
                   + '|' + [...document.querySelectorAll('*')].indexOf(e); }"""))
        page.keyboard.press("Tab")
    seen = {s for s in seen if not s.startswith("BODY|")}
    assert len(seen) >= controls, f"{page.url}: {controls} controls but only {len(seen)} reachable by Tab: {seen}"


def test_every_page_is_accessible_usable_by_keyboard_and_photographed(page, live):
    from axe_playwright_python.sync_playwright import Axe

    ids = _seed_admin_data(live)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{live.url}/login")
    pages = {"login": "/login"}
    axe = Axe()
    problems = []

    def check(name: str, path: str):
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)
            page.goto(f"{live.url}{path}")
            if name.startswith("watch-"):
                pw.expect(page.locator("#preview")).to_contain_text("Sample")  # the preview has loaded
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            if width == "desktop":
                results = axe.run(page)
                bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
                problems.extend(f"{name}: {v['id']}: {v['help']} ({len(v['nodes'])} nodes: "
                                f"{v['nodes'][0]['target']})" for v in bad)
                _keyboard_reaches_everything(page)
        page.emulate_media(color_scheme="dark")  # the dark theme's contrast too
        page.set_viewport_size(DESKTOP)
        page.goto(f"{live.url}{path}")
        results = axe.run(page, options={"runOnly": ["color-contrast"]})
        problems.extend(f"{name} (dark): {v['id']}" for v in results.response["violations"]
                        if v["impact"] in ("serious", "critical"))
        page.emulate_media(color_scheme="light")

    check("login", pages["login"])
    sign_in(page, live, "root@example.com")
    page.get_by_role("link", name="Social accounts").click()
    page.get_by_role("button", name="Connect Facebook Page (and Instagram)").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected")
    with session_scope(live.app.engine) as s:
        from aiposter.core.models import Connection

        conn = s.exec(select(Connection).where(Connection.account_name == "Garage")).first().id
    for name, path in [("dashboard", "/"), ("watches", "/watches"), ("watch-new", "/watches/new"),
                       ("watch-edit", f"/watches/{ids['watch']}/edit"), ("posts", "/posts"),
                       ("post", f"/posts/{ids['post']}"), ("drive", "/drive"), ("social", "/social"),
                       ("disconnect", f"/connections/{conn}/disconnect"), ("account", "/account"),
                       ("admin", "/admin"), ("faq", "/faq"), ("not-found", "/posts/999999")]:
        check(name, path)
    assert not problems, "\n".join(problems)
