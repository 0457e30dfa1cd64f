"""Connections to Drive, Facebook Pages, Instagram and Threads: list, connect through OAuth, disconnect."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiposter.api.deps import DB, Application, CurrentUser, public_url
from aiposter.api.errors import responses
from aiposter.api.schemas import ConnectionOut, Done, OAuthFinish, OAuthStart, PathId, Provider, Text
from aiposter.app import App
from aiposter.services import connections
from aiposter.services.oauth import OAuthFailed

router = APIRouter(prefix="/api/v1/connections", tags=["connections"])


def redirect_uri(app: App, provider: str) -> str:
    return f"{public_url(app)}/api/v1/connections/{provider}/callback"


def _out(cs) -> list[ConnectionOut]:
    return [ConnectionOut.model_validate(connections.connection_dict(c)) for c in cs]


@router.get("", response_model=list[ConnectionOut], responses=responses(401))
def list_connections(user: CurrentUser, s: DB) -> list[ConnectionOut]:
    return _out(connections.list_connections(s, user))


@router.get("/{connection_id}", response_model=ConnectionOut, responses=responses(401, 404, 422))
def get_connection(connection_id: PathId, user: CurrentUser, s: DB) -> ConnectionOut:
    return _out([connections.get_connection(s, connection_id, user)])[0]


@router.delete("/{connection_id}", response_model=Done, responses=responses(401, 404, 422))
def disconnect(connection_id: PathId, user: CurrentUser, s: DB) -> Done:
    """Disconnect: the stored tokens are deleted now. Watch targets that posted with it are removed."""
    connections.delete_connection(s, connections.get_connection(s, connection_id, user))
    return Done(detail=f"connection {connection_id} deleted")


@router.post("/{provider}/start", response_model=OAuthStart, responses=responses(401, 422))
def start(provider: Provider, user: CurrentUser, s: DB, app: Application) -> dict:
    """Begin connecting an account: send the user's browser to `authorize_url`. The provider sends it
    back to `redirect_uri` (the callback below), which finishes the connection."""
    return connections.start(s, app.cfg, app.keyring, user, provider, redirect_uri(app, provider))


@router.get("/{provider}/callback", response_model=list[ConnectionOut], responses=responses(400, 422))
def callback(provider: Provider, s: DB, app: Application,
             state: Annotated[Text(200, 1), Query()],
             code: Annotated[Text(4096, 1) | None, Query()] = None,
             error: Annotated[Text(200) | None, Query()] = None,
             error_description: Annotated[Text(1000) | None, Query()] = None) -> list[ConnectionOut]:
    """Where the provider redirects the browser. No bearer token: the single-use `state` from `start`
    identifies the user who began the connection."""
    if error or not code:
        connections.take_state(s, app.keyring, provider, state)
        s.commit()  # the state is spent either way
        raise OAuthFailed(f"the authorization was not granted: {error_description or error or 'no code'}")
    return _out(connections.finish(s, app.cfg, app.keyring, provider, state, code,
                                   redirect_uri(app, provider)))


@router.post("/{provider}/finish", response_model=list[ConnectionOut], responses=responses(400, 401, 422))
def finish(provider: Provider, body: OAuthFinish, user: CurrentUser, s: DB,
           app: Application) -> list[ConnectionOut]:
    """For front ends that receive the redirect themselves: hand over `state` and `code`. The state
    must have been started by the same user."""
    return _out(connections.finish(s, app.cfg, app.keyring, provider, body.state, body.code,
                                   redirect_uri(app, provider), user=user))
