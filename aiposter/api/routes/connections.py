"""Connections to Drive, Facebook Pages, Instagram and Threads: list, connect through OAuth, disconnect."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from aiposter.api.deps import DB, Application, CurrentActor, CurrentUser, client_address, public_url
from aiposter.api.errors import responses
from aiposter.api.schemas import (
    ConnectionOut,
    Done,
    DriveFolderPage,
    GrantOut,
    GrantSelect,
    OAuthFinish,
    OAuthStart,
    PathId,
    PendingOut,
    Provider,
    Text,
)
from aiposter.app import App
from aiposter.core.models import MetaGrant
from aiposter.services import connections, drive, grants
from aiposter.services.oauth import OAuthFailed

router = APIRouter(prefix="/api/v1/connections", tags=["connections"])


def redirect_uri(app: App, provider: str) -> str:
    return f"{public_url(app)}/api/v1/connections/{provider}/callback"


def _out(cs) -> list[ConnectionOut]:
    return [ConnectionOut.model_validate(connections.connection_dict(c)) for c in cs]


def _finished(s, app: App, result) -> list[ConnectionOut] | PendingOut:
    """What finishing returns: the connections made, or the pending choice when several were granted."""
    if isinstance(result, MetaGrant):
        return PendingOut(pending=GrantOut.model_validate(grants.grant_dict(s, app.keyring, result)))
    return _out(result)


FINISHED = {"description": "The accounts connected, or, when a Facebook Login granted several Pages or "
                           "Instagram accounts, `pending`: pick which to use at `/connections/grants/{id}`."}


@router.get("/grants/{grant_id}", response_model=GrantOut, responses=responses(401, 404, 410, 422))
def get_grant(grant_id: PathId, user: CurrentUser, s: DB, app: Application) -> GrantOut:
    """The accounts a Facebook Login granted, waiting to be picked (no tokens). Already connected ones
    say so. 410 once the choice expired (30 minutes)."""
    return GrantOut.model_validate(grants.grant_dict(s, app.keyring, grants.get_grant(s, grant_id, user)))


@router.post("/grants/{grant_id}/select", response_model=list[ConnectionOut],
             responses=responses(401, 404, 410, 422))
def select_grant(grant_id: PathId, body: GrantSelect, user: CurrentUser, s: DB, app: Application,
                 request: Request) -> list[ConnectionOut]:
    """Connect exactly the chosen accounts (a connected one gets its new token and is active again); the
    pending choice and the other accounts' tokens are deleted. Accounts left out are not disconnected."""
    return _out(grants.select_accounts(s, app.keyring, user, grant_id, body.account_ids,
                                       client=client_address(request)))


@router.delete("/grants/{grant_id}", response_model=Done, responses=responses(401, 404, 422))
def discard_grant(grant_id: PathId, user: CurrentUser, s: DB) -> Done:
    """Connect none of them: the pending choice and the tokens in it are deleted now."""
    grants.discard(s, user, grant_id)
    return Done(detail=f"pending choice {grant_id} discarded; nothing was connected")


@router.get("", response_model=list[ConnectionOut], responses=responses(401))
def list_connections(user: CurrentUser, s: DB) -> list[ConnectionOut]:
    return _out(connections.list_connections(s, user))


@router.get("/{connection_id}", response_model=ConnectionOut, responses=responses(401, 404, 422))
def get_connection(connection_id: PathId, user: CurrentUser, s: DB) -> ConnectionOut:
    return _out([connections.get_connection(s, connection_id, user)])[0]


@router.delete("/{connection_id}", response_model=Done, responses=responses(401, 404, 422))
def disconnect(connection_id: PathId, user: CurrentUser, actor: CurrentActor, s: DB, app: Application) -> Done:
    """Disconnect: the stored tokens are deleted now (a Google token is revoked at Google first, best
    effort). Watch targets that posted with it are removed."""
    c = connections.get_connection(s, connection_id, user)
    note = drive.disconnect(s, app.cfg, app.keyring, c)
    connections.delete_connection(s, c, actor)
    return Done(detail=f"connection {connection_id} deleted" + (f"; {note}" if note else ""))


@router.get("/{connection_id}/folders", response_model=DriveFolderPage, responses=responses(401, 404, 422, 503))
def drive_folders(connection_id: PathId, user: CurrentUser, s: DB, app: Application,
                  parent: Annotated[Text(200) | None, Query()] = None,
                  q: Annotated[Text(200) | None, Query()] = None,
                  page_token: Annotated[Text(2000) | None, Query()] = None) -> dict:
    """Folders of a Google Drive connection, for a folder picker: without `parent`, the shared drives and
    My Drive's top-level folders; with `parent`, its subfolders; `q` searches folder names."""
    return drive.folders(s, app.cfg, app.keyring, user, connection_id, parent, q, page_token)


def _cookie(provider: str) -> str:
    return f"aiposter_oauth_{provider}"


def _callback_path(provider: str) -> str:
    return f"/api/v1/connections/{provider}/callback"


@router.post("/{provider}/start", response_model=OAuthStart, responses=responses(401, 422))
def start(provider: Provider, user: CurrentUser, s: DB, app: Application, request: Request,
          response: Response) -> dict:
    """Begin connecting an account: send the user's browser to `authorize_url`. The provider sends it
    back to `redirect_uri` (the callback below), which finishes the connection.

    The response sets a short-lived HttpOnly cookie: the callback links accounts only in the browser that
    holds it (call this from the browser that will see the provider's page). Started elsewhere, e.g. with
    curl, finish with `POST /{provider}/finish` instead."""
    nonce = secrets.token_urlsafe(32)
    out = connections.start(s, app.cfg, app.keyring, user, provider, redirect_uri(app, provider), nonce)
    # SameSite=Lax: sent on the provider's top-level redirect back to us, never on cross-site subrequests.
    response.set_cookie(_cookie(provider), nonce, max_age=app.cfg.oauth.state_ttl_seconds,
                        path=_callback_path(provider), httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return out


@router.get("/{provider}/callback", response_model=list[ConnectionOut] | PendingOut,
            responses={200: FINISHED, **responses(400, 422)})
def callback(provider: Provider, s: DB, app: Application, request: Request, response: Response,
             state: Annotated[Text(200, 1), Query()],
             code: Annotated[Text(4096, 1) | None, Query()] = None,
             error: Annotated[Text(200) | None, Query()] = None,
             error_description: Annotated[Text(1000) | None, Query()] = None) -> list[ConnectionOut] | PendingOut:
    """Where the provider redirects the browser. No bearer token: the single-use `state` from `start`
    identifies the user who began the connection, and the cookie set by `start` proves this is the
    browser that began it. The answer lists the accounts that were linked, or, when a Facebook Login
    granted several, the pending choice (a browser is sent to the page where it picks)."""
    nonce = request.cookies.get(_cookie(provider))
    if error or not code:
        connections.take_state(s, app.keyring, provider, state, browser_nonce=nonce)
        s.commit()  # the state is spent either way
        raise OAuthFailed(f"the authorization was not granted: {error_description or error or 'no code'}")
    linked = connections.finish(s, app.cfg, app.keyring, provider, state, code, redirect_uri(app, provider),
                                browser_nonce=nonce, client=client_address(request))
    if "text/html" in request.headers.get("accept", ""):  # a browser, sent here by the web interface
        if isinstance(linked, MetaGrant):
            response = RedirectResponse(f"/connections/grants/{linked.id}", status_code=303)
        else:
            names = ", ".join(c.account_name or c.account_id for c in linked) or "no account"
            response = RedirectResponse(f"/{'drive' if provider == 'google_drive' else 'social'}?"
                                        + urlencode({"done": f"Connected: {names}."}), status_code=303)
    response.delete_cookie(_cookie(provider), path=_callback_path(provider), httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")
    return response if isinstance(response, RedirectResponse) else _finished(s, app, linked)


@router.post("/{provider}/finish", response_model=list[ConnectionOut] | PendingOut,
             responses={200: FINISHED, **responses(400, 401, 422)})
def finish(provider: Provider, body: OAuthFinish, user: CurrentUser, s: DB, app: Application,
           request: Request) -> list[ConnectionOut] | PendingOut:
    """For front ends that receive the redirect themselves, or flows started outside a browser: hand over
    `state` and `code`. The state must have been started by the same user. Answers like the callback."""
    return _finished(s, app, connections.finish(s, app.cfg, app.keyring, provider, body.state, body.code,
                                                redirect_uri(app, provider), user=user,
                                                client=client_address(request)))
