"""The Drive folder picker of the watch form: htmx partials over the service behind
GET /api/v1/connections/{id}/folders (browse My Drive and the shared drives, into subfolders and back up,
search by name). Choosing a folder fills the form's folder field (static/app.js); pasting a link still works.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from aiposter.api.deps import DB, Application
from aiposter.services import Invalid, NotFound, ServiceError, drive
from aiposter.web.session import SignedIn
from aiposter.web.templating import page

router = APIRouter(include_in_schema=False)
MAX_DEPTH = 30  # a breadcrumb trail longer than this keeps its last steps


def _url(connection_id: int, parent: str | None = None, trail: list[tuple[str, str]] = (),
         page_token: str | None = None) -> str:
    params: list[tuple[str, str]] = [("source_connection_id", str(connection_id))]
    if parent:
        params.append(("parent", parent))
    params += [("crumb", f"{fid}/{name}") for fid, name in trail]
    if page_token:
        params.append(("page_token", page_token))
    return "/watches/folders?" + urlencode(params)


def _trail(crumbs: list[str]) -> list[tuple[str, str]]:
    """The breadcrumb trail from the query: "id/name" steps from the top (Drive ids have no '/')."""
    out = []
    for c in crumbs[-MAX_DEPTH:]:
        fid, _, name = c.partition("/")
        if fid:
            out.append((fid, name or fid))
    return out


@router.get("/watches/folders")
def folders(request: Request, browser: SignedIn, s: DB, app: Application,
            source_connection_id: Annotated[str, Query(max_length=20)] = "",
            parent: Annotated[str, Query(max_length=200)] = "",
            q: Annotated[str, Query(max_length=200)] = "",
            page_token: Annotated[str, Query(max_length=2000)] = "",
            crumb: Annotated[list[str], Query(max_length=300)] = ()) -> Response:  # noqa: B008 - FastAPI's style
    ctx: dict = {"q": q.strip(), "error": None, "reconnect": False, "folders": [], "more": None, "up": None,
                 "trail": [], "retry": None}
    if not source_connection_id.isdigit():
        ctx["error"] = "Choose a Drive account first (above)."
        return page(request, "_folders.html", ctx)
    cid = int(source_connection_id)
    trail = _trail(list(crumb)) if parent and not ctx["q"] else []
    ctx["trail"] = trail
    ctx["retry"] = _url(cid, parent or None, trail, page_token or None)
    try:
        found = drive.folders(s, app.cfg, app.keyring, browser.user, cid, parent or None, ctx["q"] or None,
                              page_token or None)
    except NotFound:
        ctx["error"] = "That Drive account is not connected to your account."
        return page(request, "_folders.html", ctx)
    except Invalid as exc:
        ctx["error"], ctx["reconnect"] = exc.message, exc.field == "source_connection_id"
        return page(request, "_folders.html", ctx)
    except ServiceError as exc:  # Drive unreachable (Unavailable), or another refusal
        ctx["error"] = exc.message
        return page(request, "_folders.html", ctx)
    ctx["folders"] = [{**f, "open": _url(cid, f["id"], [*trail, (f["id"], f["name"])])} for f in found["folders"]]
    if found["next_page_token"]:
        ctx["more"] = _url(cid, parent or None, trail, found["next_page_token"])
    if parent and not ctx["q"]:
        ctx["up"] = _url(cid, trail[-2][0], trail[:-1]) if len(trail) > 1 else _url(cid)
        ctx["up_name"] = trail[-2][1] if len(trail) > 1 else "the top"
    return page(request, "_folders.html", ctx)
