"""The pages. Each handler is a thin shell over the services layer, like an API route: the same service
calls for the same data, the ServiceErrors shown on the page (a form error names its field and keeps what
was typed)."""

from __future__ import annotations

import json
import secrets
from typing import Annotated
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from aiposter import captioners as captioner_pkg
from aiposter.api.deps import DB, Application, client_address, public_url
from aiposter.api.routes.connections import _callback_path, _cookie, redirect_uri
from aiposter.captioners.template import SAMPLE_VARIABLES, normalize_hashtags
from aiposter.captioners.template import render as render_template
from aiposter.core import image_types, registry, states
from aiposter.core.errors import CaptionError
from aiposter.core.models import User
from aiposter.db import read_scope
from aiposter.services import (
    Conflict,
    Invalid,
    NotFound,
    ServiceError,
    account,
    auth,
    connections,
    export,
    notify,
    posts,
    users,
    watches,
)
from aiposter.services import pauses as pause_service
from aiposter.services.audit import Actor
from aiposter.web import session as web_session
from aiposter.web.session import COOKIE, LOGIN_CSRF_COOKIE, Checked, SignedIn, check_login_csrf, set_cookie
from aiposter.web.templating import page

router = APIRouter(include_in_schema=False)
DRIVE_PROVIDERS = ("google_drive",)
SOCIAL_PROVIDERS = ("facebook", "instagram", "threads")  # Instagram: a professional account via its Page
TARGET_PLATFORM = {"facebook": "facebook", "instagram": "instagram", "threads": "threads"}


def see_other(url: str, flash: str | None = None) -> RedirectResponse:
    if flash:
        url += ("&" if "?" in url else "?") + urlencode({"done": flash})
    return RedirectResponse(url, status_code=303)


def actor(request: Request, browser) -> Actor:
    return Actor(browser.user, client_address(request))


# ---------------------------------------------------------------- sign in / out


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    token = web_session.new_login_csrf()
    resp = page(request, "login.html", {"login_csrf": token, "next": _safe_next(next), "email": ""})
    set_cookie(resp, request, LOGIN_CSRF_COOKIE, token, max_age=3600, path="/login")
    return resp


def _safe_next(url: str) -> str:
    return url if url.startswith("/") and not url.startswith("//") else "/"


@router.post("/login")
async def login(request: Request, s: DB, app: Application, email: Annotated[str, Form()] = "",
                password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    await check_login_csrf(request)
    try:
        token, session, _user = auth.login(s, request.app.state.login_limiter, email, password,
                                           client_address(request), app.cfg.security.session_lifetime_hours)
    except ServiceError as exc:
        csrf = web_session.new_login_csrf()
        status = 429 if isinstance(exc, auth.RateLimited) else (403 if isinstance(exc, auth.Forbidden) else 401)
        resp = page(request, "login.html", {"login_csrf": csrf, "next": _safe_next(next), "email": email,
                                            "error": exc.message}, status=status)
        set_cookie(resp, request, LOGIN_CSRF_COOKIE, csrf, max_age=3600, path="/login")
        return resp
    resp = see_other(_safe_next(next))
    set_cookie(resp, request, COOKIE, token, max_age=app.cfg.security.session_lifetime_hours * 3600)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
def logout(request: Request, browser: Checked, s: DB) -> Response:
    auth.logout(s, browser.session)
    resp = see_other("/login")
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return resp


# ---------------------------------------------------------------- dashboard


def _dashboard(s, browser) -> dict:
    """The same service calls as GET /api/v1/posts?limit=20, /connections and /watches, and the counts."""
    user = browser.user
    recent = [posts.post_dict(s, p) for p in posts.list_posts(s, user, limit=20)]
    conns = [connections.connection_dict(c) for c in connections.list_connections(s, user)]
    ws = watches.watch_dicts(s, watches.list_watches(s, user))
    return {
        "failed": [p for p in recent if p["status"] in (states.FAILED, states.PARTIAL)],
        "waiting": [p for p in recent if p["status"] in states.POST_ACTIVE],
        "reauth": [c for c in conns if c["status"] != "active"],
        "erring": [w for w in ws if w["status"] == "error"],
        "recent": recent[:10], "counts": posts.counts_by_status(s, user), "connections": conns,
        "watches": ws, "paused": user.processing_paused,
    }


@router.get("/")
def dashboard(request: Request, browser: SignedIn, s: DB) -> Response:
    return page(request, "dashboard.html", _dashboard(s, browser))


@router.get("/partials/dashboard")
def dashboard_partial(request: Request, browser: SignedIn, s: DB) -> Response:
    return page(request, "_dashboard.html", _dashboard(s, browser))


# ---------------------------------------------------------------- connections


def _connections_page(request, s, app, browser, kind: str, extra: dict | None = None, status: int = 200):
    providers = DRIVE_PROVIDERS if kind == "drive" else ("facebook", "instagram", "threads")
    conns = [connections.connection_dict(c) for c in connections.list_connections(s, browser.user)
             if c.provider in providers]
    configured = {p: _configured(app, p) for p in (DRIVE_PROVIDERS if kind == "drive" else SOCIAL_PROVIDERS)}
    return page(request, "connections.html", {"kind": kind, "connections": conns, "configured": configured,
                                              "done": request.query_params.get("done"), **(extra or {})},
                status=status)


def _configured(app, provider: str) -> str | None:
    from aiposter.services import oauth

    try:
        oauth.check_configured(app.cfg, provider)
    except ServiceError as exc:
        return exc.message
    return None


@router.get("/drive")
def drive_page(request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    return _connections_page(request, s, app, browser, "drive")


@router.get("/social")
def social_page(request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    return _connections_page(request, s, app, browser, "social")


@router.post("/connections/{provider}/start")
def connect(provider: str, request: Request, browser: Checked, s: DB, app: Application) -> Response:
    """Like POST /api/v1/connections/{provider}/start, then send the browser to the provider."""
    if provider not in DRIVE_PROVIDERS + SOCIAL_PROVIDERS:
        raise NotFound(f"no provider {provider}")
    nonce = secrets.token_urlsafe(32)
    out = connections.start(s, app.cfg, app.keyring, browser.user, provider, redirect_uri(app, provider), nonce)
    resp = RedirectResponse(out["authorize_url"], status_code=303)
    set_cookie(resp, request, _cookie(provider), nonce, max_age=app.cfg.oauth.state_ttl_seconds,
               path=_callback_path(provider))
    return resp


@router.get("/connections/{connection_id}/disconnect")
def disconnect_page(connection_id: int, request: Request, browser: SignedIn, s: DB) -> Response:
    c = connections.get_connection(s, connection_id, browser.user)
    used = watches.list_watches(s, browser.user)
    targets = watches.targets_by_watch(s, [w.id for w in used])
    affected = [w.name for w in used if w.source_connection_id == c.id
                or any(t.endswith(f":{c.id}") for t in targets[w.id])]
    return page(request, "disconnect.html", {"c": connections.connection_dict(c), "affected": affected})


@router.post("/connections/{connection_id}/disconnect")
def disconnect(connection_id: int, request: Request, browser: Checked, s: DB) -> Response:
    c = connections.get_connection(s, connection_id, browser.user)
    kind = "drive" if c.provider in DRIVE_PROVIDERS else "social"
    name = c.account_name or c.account_id
    connections.delete_connection(s, c, actor(request, browser))
    return see_other(f"/{kind}", f"Disconnected {name}; its tokens were deleted.")


# ---------------------------------------------------------------- watches


@router.get("/watches")
def watches_page(request: Request, browser: SignedIn, s: DB) -> Response:
    ws = watches.watch_dicts(s, watches.list_watches(s, browser.user))
    names = {c.id: c.account_name for c in connections.list_connections(s, browser.user)}
    return page(request, "watches.html", {"watches": ws, "names": names,
                                          "done": request.query_params.get("done")})


def _form_context(s, app, browser, values: dict, watch_id: int | None = None, error=None) -> dict:
    conns = connections.list_connections(s, browser.user)
    return {
        "values": values, "watch_id": watch_id, "error": error,
        "drive_connections": [c for c in conns if c.provider == "google_drive"],
        "destinations": [("outbox", "Outbox (files on the server)")] + [
            (f"{TARGET_PLATFORM[c.provider]}:{c.id}", f"{c.provider.title()}: {c.account_name or c.account_id}")
            for c in conns if c.provider in TARGET_PLATFORM],
        "captioners": [(n, "ready" if not captioner_pkg.check(n, app.cfg) else "not set up on this server")
                       for n in registry.names(registry.CAPTIONER)],
        "default_captioner": app.cfg.captioner.default,
        "default_interval": app.cfg.watch_defaults.interval_seconds,
    }


def _number(text: str, field: str, what: str, cast=float):
    try:
        return cast(text) if text.strip() else None
    except ValueError:
        raise Invalid(f"{what} must be a number", field=field) from None


def _spec_from_form(form) -> tuple[watches.WatchSpec, dict]:
    values = {k: str(form.get(k, "")) for k in ("name", "source", "folder", "source_connection_id",
                                                 "interval_minutes", "captioner", "prompt_template", "approval",
                                                 "review_ttl_hours", "schedule_tz", "schedule_windows",
                                                 "daily_cap", "min_spacing_minutes", "image_types", "fit")}
    values["targets"] = form.getlist("targets")
    values["include_subfolders"] = bool(form.get("include_subfolders"))
    spec = watches.WatchSpec(name=values["name"].strip() or None, source=values["source"] or "local",
                             folder=values["folder"].strip(), targets=values["targets"],
                             captioner=values["captioner"], prompt_template=values["prompt_template"] or None,
                             approval=values["approval"] or "auto",
                             schedule_tz=values["schedule_tz"].strip(),
                             schedule_windows=values["schedule_windows"].strip(),
                             include_subfolders=values["include_subfolders"],
                             image_types=[values["image_types"]],  # "": the source's default
                             fit=values["fit"] or None)
    if values["source_connection_id"]:
        try:
            spec.source_connection_id = int(values["source_connection_id"])
        except ValueError:
            raise Invalid("choose one of your Drive accounts", field="source_connection_id") from None
    minutes = _number(values["interval_minutes"], "interval_seconds", "the interval") or 0
    if minutes:
        spec.interval_seconds = max(1, round(minutes * 60))
    spec.review_ttl_hours = _number(values["review_ttl_hours"], "review_ttl_hours", "the review time")
    spec.daily_cap = _number(values["daily_cap"], "daily_cap", "the daily limit", int) or 0
    spacing = _number(values["min_spacing_minutes"], "min_spacing_seconds", "the spacing") or 0
    spec.min_spacing_seconds = round(spacing * 60)
    if not spec.targets:
        raise Invalid("choose at least one destination", field="targets")
    return spec, values


@router.get("/watches/new")
def new_watch(request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    drives = [c.id for c in connections.list_connections(s, browser.user) if c.provider in DRIVE_PROVIDERS]
    values = {"source": "google_drive" if drives else "local", "targets": ["outbox"], "captioner": "",
              "interval_minutes": app.cfg.watch_defaults.interval_seconds / 60, "approval": "auto",
              "review_ttl_hours": app.cfg.watch_defaults.review_ttl_hours, "daily_cap": 0,
              "min_spacing_minutes": app.cfg.watch_defaults.min_spacing_seconds / 60,
              "source_connection_id": drives[0] if len(drives) == 1 else "",
              "image_types": image_types.describe(app.cfg.watch_defaults.image_types),
              "fit": app.cfg.watch_defaults.fit}
    return page(request, "watch_form.html", _form_context(s, app, browser, values))


@router.post("/watches/new")
async def create_watch(request: Request, browser: Checked, s: DB, app: Application) -> Response:
    form = await request.form()
    values = {}
    try:
        spec, values = _spec_from_form(form)
        w = watches.create_watch(s, app.cfg, browser.user, spec, keyring=app.keyring)
    except Invalid as exc:
        s.rollback()
        values = values or dict(form)
        return page(request, "watch_form.html", _form_context(s, app, browser, values, error=exc), status=422)
    return see_other("/watches", f"Watch “{w.name}” created; it looks for new images from now on.")


@router.get("/watches/{watch_id}/edit")
def edit_watch_page(watch_id: int, request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    w = watches.watch_dict(s, watches.get_watch(s, watch_id, browser.user))
    values = {**w, "interval_minutes": w["interval_seconds"] / 60, "captioner": w["captioner"] or "",
              "source_connection_id": w["source_connection_id"] or "", "prompt_template": w["prompt_template"] or "",
              "min_spacing_minutes": w["min_spacing_seconds"] / 60, "schedule_tz": w["schedule_tz"] or "",
              "schedule_windows": w["schedule_windows"] or "",
              "image_types": image_types.describe(w["image_types"] or ())}
    return page(request, "watch_form.html", _form_context(s, app, browser, values, watch_id))


@router.post("/watches/{watch_id}/edit")
async def edit_watch(watch_id: int, request: Request, browser: Checked, s: DB, app: Application) -> Response:
    w = watches.get_watch(s, watch_id, browser.user)
    form = await request.form()
    values = {}
    try:
        spec, values = _spec_from_form(form)
        if not spec.prompt_template and w.prompt_template:
            spec.prompt_template = None
            w.prompt_template = None  # an emptied field clears the watch's own template
        # Unchanged Drive settings are left alone: only a change takes a new baseline of the folder.
        if spec.source_connection_id == w.source_connection_id:
            spec.source_connection_id = None
        if spec.include_subfolders == w.include_subfolders:
            spec.include_subfolders = None
        watches.update_watch(s, app.cfg, browser.user, w, spec, keyring=app.keyring)
    except Invalid as exc:
        s.rollback()
        values = values or dict(form)
        return page(request, "watch_form.html", _form_context(s, app, browser, values, watch_id, exc), status=422)
    return see_other("/watches", f"Watch “{w.name}” saved.")


@router.post("/watches/preview")
async def preview_prompt(request: Request, browser: Checked, app: Application) -> Response:
    """The prompt template rendered in the sandbox for a sample file, as the captioner will see it."""
    form = await request.form()
    text = str(form.get("prompt_template") or "") or app.cfg.captioner.template.template
    variables = {**SAMPLE_VARIABLES, "brand_voice": browser.user.brand_voice,
                 "hashtags": " ".join(normalize_hashtags(browser.user.default_hashtags))
                 or SAMPLE_VARIABLES["hashtags"]}
    try:
        rendered, error = render_template(text, variables), None
    except CaptionError as exc:
        rendered, error = None, exc.message
    return page(request, "_preview.html", {"rendered": rendered, "error": error, "sample": variables})


@router.post("/watches/{watch_id}/{action}")
def watch_action(watch_id: int, action: str, request: Request, browser: Checked, s: DB,
                 app: Application) -> Response:
    w = watches.get_watch(s, watch_id, browser.user)
    if action in ("pause", "resume"):
        watches.update_watch(s, app.cfg, browser.user, w, watches.WatchSpec(enabled=action == "resume"),
                             keyring=app.keyring)
        msg = f"Watch “{w.name}” {'paused' if action == 'pause' else 'resumed'}."
    elif action == "poll":
        watches.poll_now(s, w)
        msg = f"Watch “{w.name}” will look for new images within seconds."
    elif action == "delete":
        name = w.name
        watches.delete_watch(s, w, app.media, app.cfg, app.keyring)
        msg = f"Watch “{name}” and its post records were deleted."
    else:
        raise NotFound(f"no action {action}")
    return see_other("/watches", msg)


# ---------------------------------------------------------------- posts


PAGE_SIZE = 50


@router.get("/posts")
def posts_page(request: Request, browser: SignedIn, s: DB,
               status: Annotated[str, Query()] = "", watch: Annotated[str, Query()] = "",
               q: Annotated[str, Query(max_length=200)] = "",
               before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> Response:
    partial = bool(request.headers.get("hx-request"))  # the list only: no filter form to fill
    ctx = _posts(s, browser, status, watch, q, before, with_watches=not partial)
    return page(request, "_posts.html" if partial else "posts.html", ctx)


def _posts(s, browser, status: str, watch: str, q: str, before: int | None, with_watches: bool) -> dict:
    """The same service calls as GET /api/v1/posts with these filters."""
    watch_id = int(watch) if watch.isdigit() else None
    if q.strip():  # a search: the web interface's own filter
        rows = posts.list_posts(s, browser.user, status=status or None, watch_id=watch_id, limit=PAGE_SIZE,
                                before_id=before, search=q.strip())
        items = [posts.post_dict(s, p) for p in rows]
    else:  # exactly what GET /api/v1/posts reads: one Core query on a read snapshot
        with read_scope(s.get_bind()) as conn:
            items = posts.page_dicts(conn, browser.user.id, status=status or None, watch_id=watch_id,
                                     limit=PAGE_SIZE, before_id=before)
    return {"posts": items, "status": status, "watch": watch, "q": q, "states": states.POST_STATES,
            "next_cursor": items[-1]["id"] if len(items) == PAGE_SIZE else None,
            "watches": [(w.id, w.name) for w in watches.list_watches(s, browser.user)] if with_watches else [],
            "active": any(p["status"] in states.POST_ACTIVE for p in items)}


@router.get("/posts/{post_id}")
def post_page(post_id: int, request: Request, browser: SignedIn, s: DB) -> Response:
    p = posts.post_dict(s, posts.get_post(s, post_id, browser.user), detail=True)
    name = "_post.html" if request.headers.get("hx-request") else "post.html"
    return page(request, name, {"p": p, "active": p["status"] in states.POST_ACTIVE,
                                "done": request.query_params.get("done")})


@router.post("/posts/{post_id}/retry")
def retry_post(post_id: int, request: Request, browser: Checked, s: DB) -> Response:
    p = posts.get_post(s, post_id, browser.user)
    try:
        posts.retry_post(s, p)
    except Conflict as exc:
        return see_other(f"/posts/{post_id}", exc.message)
    return see_other(f"/posts/{post_id}", "Retrying now.")


@router.post("/posts/{post_id}/targets/{target_id}/retry")
def retry_target(post_id: int, target_id: int, request: Request, browser: Checked, s: DB) -> Response:
    p = posts.get_post(s, post_id, browser.user)
    try:
        t = posts.retry_target(s, p, target_id)
    except Invalid as exc:
        return see_other(f"/posts/{post_id}", exc.message)
    return see_other(f"/posts/{post_id}", f"Sending to {t.platform} again.")


# ---------------------------------------------------------------- account


def _account(request, s, browser, extra: dict | None = None, status: int = 200) -> Response:
    """The same service calls as GET /api/v1/notify/channels and /notify/recent, and the live sessions."""
    user, keyring = browser.user, request.app.state.application.keyring
    ctx = {"sessions": auth.active_sessions(s, user), "done": request.query_params.get("done"), "errors": {},
           "form": {}, "channels": [notify.channel_dict(c, keyring) for c in notify.list_channels(s, user)],
           "notifications": [notify.notification_dict(n) for n in notify.recent(s, user, limit=5)]}
    ctx.update(extra or {})
    return page(request, "account.html", ctx, status=status)


@router.get("/account")
def account_page(request: Request, browser: SignedIn, s: DB) -> Response:
    return _account(request, s, browser)


@router.post("/account/profile")
def update_profile(request: Request, browser: Checked, s: DB, display_name: Annotated[str, Form()] = "",
                   brand_voice: Annotated[str, Form()] = "", default_hashtags: Annotated[str, Form()] = "") -> Response:
    tags = [t for t in default_hashtags.replace(",", " ").split() if t]
    try:
        account.update_profile(s, browser.user, display_name, brand_voice, tags)
    except Invalid as exc:
        s.rollback()
        return _account(request, s, browser, {"errors": {exc.field or "profile": exc.message}, "form": {
            "display_name": display_name, "brand_voice": brand_voice, "default_hashtags": default_hashtags}}, 422)
    return see_other("/account", "Profile saved.")


@router.post("/account/password")
def change_password(request: Request, browser: Checked, s: DB, current_password: Annotated[str, Form()] = "",
                    new_password: Annotated[str, Form()] = "") -> Response:
    try:
        n = auth.change_password(s, request.app.state.login_limiter, actor(request, browser), browser.user,
                                 current_password, new_password, keep=browser.session)
    except ServiceError as exc:
        s.rollback()
        field = exc.field or "current_password"
        return _account(request, s, browser, {"errors": {field: exc.message}}, 422)
    return see_other("/account", f"Password changed; {n} other session(s) signed out.")


@router.post("/account/notifications")
def add_notification(request: Request, browser: Checked, s: DB, app: Application,
                     url: Annotated[str, Form()] = "", label: Annotated[str, Form()] = "") -> Response:
    """Like POST /api/v1/notify/channels."""
    try:
        notify.add_channel(s, app.keyring, browser.user, url, label)
    except ServiceError as exc:
        s.rollback()
        return _account(request, s, browser, {"errors": {"notify_url": exc.message},
                                              "form": {"notify_url": url, "notify_label": label}}, 422)
    return see_other("/account", "Notification URL added.")


@router.post("/account/notifications/{channel_id}/remove")
def remove_notification(channel_id: int, request: Request, browser: Checked, s: DB) -> Response:
    notify.remove_channel(s, browser.user, channel_id)
    return see_other("/account", "Notification URL removed.")


@router.post("/account/notifications/test")
def test_notification(request: Request, browser: Checked, s: DB, app: Application) -> Response:
    """Like POST /api/v1/notify/test: a sample message to every URL now, and whether a receiver took it."""
    try:
        result = notify.send_test(s, app.keyring, app.cfg, browser.user)
    except Invalid as exc:
        return _account(request, s, browser, {"errors": {"notify_url": exc.message}}, 422)
    if not result.ok:
        return _account(request, s, browser, {"errors": {"notify_test": f"The test was not delivered: "
                                                                        f"{result.error}"}}, 502)
    return see_other("/account", "Test notification sent; check that it arrived.")


@router.post("/account/sessions/{session_id}/end")
def end_session(session_id: int, request: Request, browser: Checked, s: DB) -> Response:
    auth.end_session(s, browser.user, session_id)
    return see_other("/account", "That session was signed out.")


@router.get("/account/export")
def export_me(request: Request, browser: SignedIn, s: DB) -> Response:
    doc = export.export_user(s, browser.user, actor(request, browser))
    body = json.dumps(doc, indent=2, default=str)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": 'attachment; filename="aiposter-export.json"', "Cache-Control": "no-store"})


@router.post("/account/delete")
def delete_account(request: Request, browser: Checked, s: DB, app: Application,
                   password: Annotated[str, Form()] = "") -> Response:
    try:
        account.delete_own_account(s, app.cfg, request.app.state.login_limiter, actor(request, browser),
                                   browser.user, password)
    except ServiceError as exc:
        s.rollback()
        return _account(request, s, browser, {"errors": {"delete_password": exc.message}}, 403)
    resp = see_other("/login?deleted=1")
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.post("/account/{action}")
def pause_account(action: str, request: Request, browser: Checked, s: DB) -> Response:
    if action not in ("pause", "resume"):
        raise NotFound(f"no action {action}")
    users.set_paused(s, browser.user, action == "pause")
    return see_other("/account", "Everything is paused." if action == "pause" else "Processing resumed.")


# ---------------------------------------------------------------- admin


def _admin(browser) -> User:
    if browser.user.role != "admin":
        raise auth.Forbidden("this page is for admins")
    return browser.user


def _admin_page(request, s, app, browser, extra=None, status=200) -> Response:
    _admin(browser)
    # Read through this request's session: a second connection would wait on its SQLite lock.
    revision = ", ".join(s.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    daemon = request.app.state.daemon
    queue = posts.in_flight(s)
    ctx = {"users": users.list_users(s), "pauses": pause_service.list_pauses(s), "revision": revision,
           "dialect": app.engine.dialect.name, "queue": queue,
           "scheduler": "not in this process" if daemon is None else ("running" if daemon.running else "stopped"),
           "captioner": app.cfg.captioner.default, "captioner_problem": captioner_pkg.check(app.cfg.captioner.default,
                                                                                          app.cfg),
           "counts": posts.counts_by_status(s), "done": request.query_params.get("done"), "form": {}, "error": None}
    ctx.update(extra or {})
    return page(request, "admin.html", ctx, status=status)


@router.get("/admin")
def admin_page(request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    return _admin_page(request, s, app, browser)


@router.post("/admin/users")
def create_user(request: Request, browser: Checked, s: DB, app: Application, email: Annotated[str, Form()] = "",
                password: Annotated[str, Form()] = "", display_name: Annotated[str, Form()] = "",
                role: Annotated[str, Form()] = "user") -> Response:
    _admin(browser)
    try:
        if role not in ("user", "admin"):
            raise Invalid("role must be user or admin", field="role")
        u = users.create_user(s, email, password, display_name=display_name, role=role,
                              actor=actor(request, browser))
    except ServiceError as exc:
        s.rollback()
        return _admin_page(request, s, app, browser, {"error": exc, "form": {
            "email": email, "display_name": display_name, "role": role}}, 422)
    return see_other("/admin", f"User {u.email} created.")


@router.post("/admin/users/{user_id}/{action}")
def user_action(user_id: int, action: str, request: Request, browser: Checked, s: DB, app: Application) -> Response:
    admin = _admin(browser)
    u = s.get(User, user_id)
    if u is None:
        raise NotFound(f"no user {user_id}")
    if u.id == admin.id and action in ("disable", "delete"):
        raise Conflict("you cannot disable or delete your own account here; use the Account page")
    if action in ("disable", "enable"):
        account.set_disabled(s, u, action == "disable", actor(request, browser))
    elif action == "delete":
        users.delete_user(s, app.cfg, u, actor(request, browser))
    else:
        raise NotFound(f"no action {action}")
    return see_other("/admin", f"User {u.email}: {action}d.")


# ---------------------------------------------------------------- help


@router.get("/faq")
def faq(request: Request, s: DB, app: Application) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        try:
            user, session = auth.authenticate(s, token)
            request.state.browser = web_session.Browser(user, session, web_session.csrf_for(token))
        except auth.Unauthorized:
            pass
    return page(request, "faq.html", {"cfg": app.cfg, "public_url": public_url(app)})
