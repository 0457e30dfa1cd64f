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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import uvicorn
from conftest import make_config
from helpers import jpeg_bytes, wait_for, write_image
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
from fakes.drive import CLIENT_ID as DRIVE_CLIENT_ID  # noqa: E402
from fakes.drive import CLIENT_SECRET as DRIVE_CLIENT_SECRET  # noqa: E402
from fakes.drive import FakeDrive  # noqa: E402

CHROMIUM = os.environ.get("AIPOSTER_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "correct horse battery"
# Screenshots go to docs/screenshots/ only when asked (AIPOSTER_SCREENSHOTS=1, to refresh the docs' pictures);
# otherwise into pytest's temporary directory, so a test run leaves the work tree as it was.
DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 860}, {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Consent:
    """The providers' consent pages: the user approves at once, and the provider sends the browser back to
    the redirect URI with a code the OAuth fake will accept (:meth:`FakeOAuth.approve`)."""

    def __init__(self, fake: FakeOAuth, drive: FakeDrive):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = f"http://{self.headers['Host']}{self.path}"
                code, state = (drive if self.path.startswith("/google/") else fake).approve(url)
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
        self.drive = FakeDrive()
        self.consent = Consent(self.fake, self.drive)
        oauth = oauth_config(self.fake.url)
        # Google Drive is the Drive fake (OAuth, about, folders, changes), through the real client libraries.
        oauth["google"] = {"client_id": DRIVE_CLIENT_ID, "client_secret": DRIVE_CLIENT_SECRET,
                           "auth_uri": f"{self.consent.url}/google/auth", "token_uri": self.drive.token_uri,
                           "drive_api_url": self.drive.api_url.rstrip("/"), "revoke_uri": self.drive.revoke_uri,
                           "min_interval_seconds": 1}
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
        self.drive.close()
        self.consent.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake token endpoint is plain http
    server = Live(tmp_path_factory.mktemp("web"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("AIPOSTER_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SHOTS
    return tmp_path_factory.mktemp("screenshots")


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


def test_a_user_connects_accounts_watches_a_folder_and_sees_a_post_published(page, live, shots):
    live.user("ann@example.com")
    shop = live.drive.add_folder("Shop")
    windows = live.drive.add_folder("Windows", shop)
    live.drive.add_folder("Archive", shop)
    sign_in(page, live, "ann@example.com")
    pw.expect(page.get_by_role("heading", name="Get started")).to_be_visible()  # the empty state's next steps

    page.get_by_role("link", name="Drive accounts").click()
    page.get_by_role("button", name="Connect Google Drive").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected")
    pw.expect(page.locator("table")).to_contain_text("Google Drive")

    page.get_by_role("link", name="Social accounts").click()
    page.get_by_role("button", name="Connect Facebook Page", exact=True).click()
    page.get_by_label("Bakery").check()  # Facebook granted two Pages: choose which to use
    page.get_by_label("Garage").check()
    page.get_by_role("button", name="Use the selected Pages").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected: Bakery")
    pw.expect(page.locator("table")).to_contain_text("Garage")  # every Page the user granted

    page.get_by_role("link", name="Watches").click()
    page.get_by_role("link", name="create your first watch").click()
    page.get_by_label("Name").fill("Shop window")
    # The folder picker: the only Drive account is chosen; browse into a folder, back up, search, choose.
    page.get_by_role("button", name="Browse Drive folders").click()
    where = page.locator("#picker-where")
    pw.expect(where).to_have_text("My Drive and shared drives")
    page.get_by_role("button", name="Open Shop").click()
    pw.expect(where).to_have_text("In Shop")
    pw.expect(where).to_be_focused()  # the keyboard user lands on the new list
    page.get_by_role("button", name="Back up to the top").click()
    pw.expect(where).to_have_text("My Drive and shared drives")
    search = page.get_by_label("Search Drive folders")
    search.fill("Wind")
    pw.expect(where).to_contain_text("Folders named like")
    search.press("Enter")  # searches; does not send the form
    pw.expect(page.get_by_role("heading", name="New watch")).to_be_visible()
    pw.expect(search).to_be_focused()
    choose = page.get_by_role("button", name="Choose Windows")
    choose.focus()
    page.keyboard.press("Enter")
    pw.expect(page.locator("#picked")).to_have_text("Chosen: Windows")
    pw.expect(page.get_by_label("Folder path, or a Drive folder link")).to_have_value(windows)
    pw.expect(page.get_by_label("A Google Drive folder")).to_be_checked()
    _scan(page, "watch-picker", shots)
    page.get_by_label("Look for new photos every (minutes)").fill("0.02")
    page.get_by_label("Prompt template").fill("New in {{ folder }}: {{ file_stem }}")
    pw.expect(page.locator("#preview")).to_contain_text("New in Holidays: IMG_0001")  # the live preview
    pw.expect(page.get_by_label("Outbox (files on the server)")).to_be_checked()
    page.get_by_role("button", name="Create watch").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Shop window")
    with session_scope(live.app.engine) as s:
        w = s.exec(select(Watch).where(Watch.name == "Shop window")).one()
        wid = w.id
        assert (w.source, w.folder, w.folder_name) == ("google_drive", windows, "Windows")
    assert wait_for(lambda: _baseline_done(live, wid))

    page.get_by_role("link", name="Dashboard").click()
    live.drive.add_file("croissant.jpg", windows, content=jpeg_bytes())
    recent = page.locator("section", has=page.get_by_role("heading", name="Recent activity"))
    pw.expect(recent).to_contain_text("croissant.jpg", timeout=30_000)  # appears without a reload
    pw.expect(recent.locator(".badge")).to_have_text("published", timeout=30_000)
    page.screenshot(path=str(shots / "journey-dashboard.png"))

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


def _scan(page, name: str, shots: Path) -> None:
    """The page as it is now (no reload: an htmx state counts too): no serious or critical axe violation in
    the light and the dark theme; photographed at desktop and phone width."""
    from axe_playwright_python.sync_playwright import Axe

    axe, problems = Axe(), []
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        problems += [f"{name} ({scheme}): {v['id']}: {v['help']} ({v['nodes'][0]['target']})"
                     for v in axe.run(page).response["violations"] if v["impact"] in ("serious", "critical")]
    page.emulate_media(color_scheme="light")
    page.screenshot(path=str(shots / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(shots / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    assert not problems, "\n".join(problems)


def _outbox(live) -> list[dict]:
    d = Path(live.cfg.publishers.outbox.directory)
    return [json.loads(f.read_text()) for f in sorted(d.glob("*.json"))] if d.exists() else []


def _statuses(live, names) -> list[str]:
    with session_scope(live.app.engine) as s:
        return [p.status for p in s.exec(select(Post).where(Post.file_name.in_(names)).order_by(Post.id))]


def test_review_queue_by_keyboard_with_an_over_limit_edit_then_approve_and_reject(page, live, shots):
    folder = live.user("rita@example.com")
    sign_in(page, live, "rita@example.com")
    page.get_by_role("link", name="Watches").click()
    page.get_by_role("link", name="create your first watch").click()
    page.get_by_label("Name").fill("Counter")
    page.get_by_label("Folder path, or a Drive folder link").fill(str(folder))
    page.get_by_label("Look for new photos every (minutes)").fill("0.02")
    page.get_by_label("Wait for my review (on the Review page)").check()
    page.get_by_role("button", name="Create watch").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Counter")
    with session_scope(live.app.engine) as s:
        wid = s.exec(select(Watch).where(Watch.name == "Counter")).one().id
    assert wait_for(lambda: _baseline_done(live, wid))
    names = ["bread.jpg", "cake.jpg"]
    for n in names:
        write_image(folder, n)
    assert wait_for(lambda: _statuses(live, names) == ["awaiting_review"] * 2, 60)

    page.get_by_role("link", name="Dashboard").click()
    page.get_by_role("link", name="2 posts waiting for your review").click()
    pw.expect(page.get_by_role("heading", name="bread.jpg")).to_be_visible()
    pw.expect(page.locator(".queue-nav")).to_contain_text("Post 1 of 2")
    pw.expect(page.locator(".review-image img")).to_be_visible()  # the owner's preview, with its alt text
    assert page.evaluate("document.querySelector('.review-image img').naturalWidth") > 0
    _scan(page, "review", shots)
    _keyboard_reaches_everything(page)

    page.keyboard.press("j")  # next
    pw.expect(page.get_by_role("heading", name="cake.jpg")).to_be_visible()
    page.keyboard.press("k")  # previous
    pw.expect(page.get_by_role("heading", name="bread.jpg")).to_be_visible()
    page.keyboard.press("e")  # edit: the first caption editor
    caption = page.get_by_label("Caption for Outbox")
    pw.expect(caption).to_be_focused()

    caption.fill("x" * 501)  # Threads' limit of 500 applies to the outbox: the strictest known
    error = page.locator("[data-error-of]").first
    pw.expect(page.locator("[data-count-of]").first).to_have_text("501")
    pw.expect(error).to_contain_text("501 characters; the limit is 500")
    approve = page.get_by_role("button", name="Approve all")
    pw.expect(approve).to_be_disabled()
    page.keyboard.press("a")  # typing, not a shortcut: the letter goes into the caption
    pw.expect(caption).to_have_value("x" * 501 + "a")
    pw.expect(page.get_by_role("heading", name="bread.jpg")).to_be_visible()
    page.get_by_role("button", name="Save edits").click()  # the server refuses it too, keeping the text
    pw.expect(page.get_by_role("alert")).to_contain_text("the limit is 500")
    pw.expect(page.get_by_label("Caption for Outbox")).to_have_value("x" * 501 + "a")
    assert _statuses(live, names) == ["awaiting_review"] * 2

    caption = page.get_by_label("Caption for Outbox")
    caption.fill("Fresh bread, still warm 🍞 #bakery")
    pw.expect(error).to_be_hidden()
    pw.expect(page.locator("[data-count-of]").first).to_have_text("36")  # 🍞 counts its 4 UTF-8 bytes on Threads
    pw.expect(approve).to_be_enabled()
    page.get_by_label("Alt text").fill("A loaf of bread on a wooden board")
    page.locator("h1").click()  # out of the fields: the shortcuts work again
    page.keyboard.press("a")  # approve all
    pw.expect(page.get_by_role("status")).to_contain_text("bread.jpg approved")
    pw.expect(page.get_by_role("heading", name="cake.jpg")).to_be_visible()  # on to the next in the queue
    assert wait_for(lambda: _statuses(live, ["bread.jpg"]) == ["published"], 60)
    published = [(x["caption"], x["alt_text"]) for x in _outbox(live) if x["source_file"] == "bread.jpg"]
    assert published == [("Fresh bread, still warm 🍞 #bakery", "A loaf of bread on a wooden board")]

    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("r")  # reject, after a confirmation
    pw.expect(page.get_by_role("status")).to_contain_text("cake.jpg rejected")
    pw.expect(page.get_by_role("heading", name="Nothing waits for your review")).to_be_visible()
    assert _statuses(live, names) == ["published", "rejected"]


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


def test_every_page_is_accessible_usable_by_keyboard_and_photographed(page, live, shots):
    from axe_playwright_python.sync_playwright import Axe

    ids = _seed_admin_data(live)
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
            page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
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
    page.get_by_role("button", name="Connect Facebook Page", exact=True).click()
    page.get_by_label("Bakery").check()  # Facebook granted two Pages: choose which to use
    page.get_by_label("Garage").check()
    page.get_by_role("button", name="Use the selected Pages").click()
    pw.expect(page.get_by_role("status")).to_contain_text("Connected")
    with session_scope(live.app.engine) as s:
        from aiposter.core.models import Connection

        conn = s.exec(select(Connection).where(Connection.account_name == "Garage")).first().id
    for name, path in [("dashboard", "/"), ("watches", "/watches"), ("watch-new", "/watches/new"),
                       ("watch-edit", f"/watches/{ids['watch']}/edit"), ("posts", "/posts"),
                       ("post", f"/posts/{ids['post']}"), ("drive", "/drive"), ("social", "/social"),
                       ("disconnect", f"/connections/{conn}/disconnect"), ("account", "/account"),
                       ("admin", "/admin"), ("faq", "/faq"), ("review-empty", "/review"),
                       ("not-found", "/posts/999999")]:
        check(name, path)
    assert not problems, "\n".join(problems)
