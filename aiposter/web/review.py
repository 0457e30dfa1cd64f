"""The review queue: posts of watches with ``approval = "review"`` waiting for their owner.

One post at a time, with its image (served to its owner only, while the post is in flight), each
destination's caption in an editor with a live count against that platform's limit (static/app.js counts
as :mod:`aiposter.captioners.fitting` does; the server checks again), the alt text, regenerate with an
instruction, approve (all or one destination) and reject. j/k/e/a/r go through the queue by keyboard.
Every action is a service call of :mod:`aiposter.services.review`, like the API's review routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from aiposter.api.deps import DB, Application, client_address
from aiposter.api.routes.posts import image_response
from aiposter.captioners import fitting
from aiposter.core import states
from aiposter.services import Conflict, Invalid, posts, review
from aiposter.services.audit import Actor
from aiposter.web.routes import see_other
from aiposter.web.session import Checked, SignedIn
from aiposter.web.templating import page

router = APIRouter(include_in_schema=False)
WEIGHTS = {fitting.utf16_units: "utf16", fitting.threads_weight: "threads", fitting.code_point: "code_point"}
PLATFORM_NAMES = {"facebook": "Facebook", "instagram": "Instagram", "threads": "Threads", "outbox": "Outbox"}


def _actor(request: Request, browser) -> Actor:
    return Actor(browser.user, client_address(request))


def _queue(s, browser) -> list[int]:
    return [p.id for p in review.pending_reviews(s, browser.user)]


@router.get("/review")
def review_queue(request: Request, browser: SignedIn, s: DB) -> Response:
    """The first post waiting for review, or the empty queue."""
    queue = _queue(s, browser)
    if queue:
        done = request.query_params.get("done")
        return see_other(f"/review/{queue[0]}", done) if done else see_other(f"/review/{queue[0]}")
    return page(request, "review.html", {"item": None, "done": request.query_params.get("done")})


def _item(s, post, queue: list[int], typed: dict | None = None, errors: dict | None = None) -> dict:
    """The review page's context: the service's review_dict, each target's limits for the live counter."""
    d = review.review_dict(s, post)
    typed = typed or {}
    for t in d["targets"]:
        limits = fitting.limits_for(t["platform"])
        t.update(name=PLATFORM_NAMES.get(t["platform"], t["platform"]), weight=WEIGHTS.get(limits.weight, "threads"),
                 max_hashtags=limits.max_hashtags, max_mentions=limits.max_mentions,
                 text=typed.get(f"caption-{t['id']}", t["caption"]))
    d["alt_text_typed"] = typed.get("alt_text", d["alt_text"] or "")
    d["alt_max"] = fitting.ALT_TEXT_MAX
    d["image_url"] = f"/review/{post.id}/image" if d["image_url"] else None
    pos = queue.index(post.id) if post.id in queue else None
    return {"item": d, "errors": errors or {}, "position": pos, "total": len(queue),
            "prev": queue[pos - 1] if pos else None,
            "next": queue[pos + 1] if pos is not None and pos + 1 < len(queue) else None,
            "open": post.status == states.AWAITING_REVIEW, "instruction": typed.get("instruction", "")}


@router.get("/review/{post_id}")
def review_page(post_id: int, request: Request, browser: SignedIn, s: DB) -> Response:
    post = posts.get_post(s, post_id, browser.user)
    ctx = _item(s, post, _queue(s, browser))
    return page(request, "review.html", {**ctx, "done": request.query_params.get("done")})


@router.get("/review/{post_id}/image")
def review_image(post_id: int, browser: SignedIn, s: DB, app: Application) -> Response:
    """Like GET /api/v1/posts/{id}/image: the prepared image, to its owner only, while the post is in flight."""
    return image_response(posts.open_image(app.media, posts.get_post(s, post_id, browser.user)))


def _after(s, browser, post_id: int, message: str) -> Response:
    """To the next post in the queue (or the empty queue), saying what was done."""
    queue = [i for i in _queue(s, browser) if i != post_id]
    later = [i for i in queue if i > post_id]
    target = (later or queue or [None])[0]
    return see_other(f"/review/{target}" if target else "/review", message)


@router.post("/review/{post_id}")
async def review_action(post_id: int, request: Request, browser: Checked, s: DB) -> Response:
    """Save the edits, then approve all destinations or one (``approve`` = a target id), or only save."""
    post = posts.get_post(s, post_id, browser.user)
    form = await request.form()
    typed = {k: str(v) for k, v in form.items() if k.startswith("caption-") or k == "alt_text"}
    action = str(form.get("action") or "save")
    current = review.review_dict(s, post)
    errors: dict[str, str] = {}
    captions: dict[str, str] = {}
    for t in current["targets"]:
        key = f"caption-{t['id']}"
        if key not in typed or t["status"] != states.T_PENDING:
            continue
        try:
            text = review.validate_caption(t["platform"], typed[key])
        except Invalid as exc:
            errors[key] = f"{PLATFORM_NAMES.get(t['platform'], t['platform'])}: {exc.message}"
            continue
        if text != t["caption"]:
            captions[str(t["id"])] = text
    alt = None
    if "alt_text" in typed:
        try:
            alt = review.validate_alt_text(typed["alt_text"])
        except Invalid as exc:
            errors["alt_text"] = exc.message
        if alt == (current["alt_text"] or ""):
            alt = None
    if errors:
        ctx = _item(s, post, _queue(s, browser), typed, errors)
        return page(request, "review.html", ctx, status=422)
    actor = _actor(request, browser)
    try:
        if captions or alt is not None:
            review.edit(s, post, actor, captions=captions or None, alt_text=alt)
        if action == "save":
            return see_other(f"/review/{post_id}", "Edits saved." if captions or alt is not None else
                             "Nothing changed.")
        ids = [int(action)] if action.isdigit() else None
        review.approve(s, post, actor, ids)
    except (Conflict, Invalid) as exc:
        s.rollback()
        return see_other(f"/review/{post_id}", exc.message)
    s.flush()
    what = "all its destinations" if ids is None else "one destination (the others are skipped)"
    return _after(s, browser, post_id, f"{post.file_name} approved for {what}; it is being published.")


@router.post("/review/{post_id}/regenerate")
def regenerate(post_id: int, request: Request, browser: Checked, s: DB,
               instruction: Annotated[str, Form()] = "") -> Response:
    post = posts.get_post(s, post_id, browser.user)
    try:
        review.regenerate(s, post, _actor(request, browser), instruction)
    except Invalid as exc:
        ctx = _item(s, post, _queue(s, browser), {"instruction": instruction}, {"instruction": exc.message})
        return page(request, "review.html", ctx, status=422)
    except Conflict as exc:
        return see_other(f"/review/{post_id}", exc.message)
    s.flush()
    return _after(s, browser, post_id, f"New captions requested for {post.file_name}; it comes back to this "
                                       "queue when they are written.")


@router.post("/review/{post_id}/reject")
def reject(post_id: int, request: Request, browser: Checked, s: DB, app: Application,
           reason: Annotated[str, Form()] = "") -> Response:
    post = posts.get_post(s, post_id, browser.user)
    name = post.file_name
    try:
        review.reject(s, post, _actor(request, browser), app.media, reason)
    except Conflict as exc:
        return see_other(f"/review/{post_id}", exc.message)
    return _after(s, browser, post_id, f"{name} rejected: nothing was published and its image was deleted.")
