"""The page where a user picks which Facebook Pages (or Instagram accounts) to use, when one Facebook Login
granted several: a thin shell over :mod:`aiposter.services.grants`, like the API's
``/api/v1/connections/grants`` routes. The OAuth callback sends the browser here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from aiposter.api.deps import DB, Application, client_address
from aiposter.services import Invalid, grants
from aiposter.web.routes import see_other
from aiposter.web.session import Checked, SignedIn
from aiposter.web.templating import page

router = APIRouter(include_in_schema=False)


def _page(request, s, app, browser, grant_id: int, chosen: list[str] | None = None, error=None,
          status: int = 200) -> Response:
    g = grants.grant_dict(s, app.keyring, grants.get_grant(s, grant_id, browser.user))
    if chosen is None:  # first showing: what is connected already is ticked
        chosen = [c["account_id"] for c in g["candidates"] if c["connected"]]
    what = "Instagram accounts" if g["provider"] == "instagram" else "Pages"
    return page(request, "grant.html", {"g": g, "chosen": chosen, "error": error, "what": what,
                                        "minutes": int(grants.GRANT_TTL.total_seconds() // 60)}, status=status)


@router.get("/connections/grants/{grant_id}")
def choose_page(grant_id: int, request: Request, browser: SignedIn, s: DB, app: Application) -> Response:
    return _page(request, s, app, browser, grant_id)


@router.post("/connections/grants/{grant_id}")
async def choose(grant_id: int, request: Request, browser: Checked, s: DB, app: Application) -> Response:
    chosen = [str(v) for v in (await request.form()).getlist("account_ids")]
    try:
        linked = grants.select_accounts(s, app.keyring, browser.user, grant_id, chosen,
                                        client=client_address(request))
    except Invalid as exc:
        s.rollback()
        return _page(request, s, app, browser, grant_id, chosen, exc, status=422)
    names = ", ".join(c.account_name or c.account_id for c in linked)
    return see_other("/social", f"Connected: {names}.")


@router.post("/connections/grants/{grant_id}/discard")
def discard(grant_id: int, request: Request, browser: Checked, s: DB) -> Response:
    grants.discard(s, browser.user, grant_id)
    return see_other("/social", "Nothing was connected; the access Facebook gave was dropped.")
