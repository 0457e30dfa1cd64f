"""Log in and out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from aiposter.api.deps import DB, Application, CurrentCaller, client_address
from aiposter.api.errors import responses
from aiposter.api.schemas import Done, LoginRequest, LoginResponse, UserOut
from aiposter.services import auth

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/login", response_model=LoginResponse, responses=responses(401, 403, 422, 429))
def login(body: LoginRequest, request: Request, s: DB, app: Application) -> dict:
    """Exchange email and password for a bearer token. Failed attempts are rate-limited per account and
    per client address (HTTP 429 with Retry-After)."""
    token, session, user = auth.login(s, request.app.state.login_limiter, body.email, body.password,
                                      client_address(request), app.cfg.security.session_lifetime_hours)
    return {"token": token, "expires_at": session.expires_at, "user": UserOut.model_validate(user)}


@router.post("/logout", response_model=Done, responses=responses(401))
def logout(caller: CurrentCaller, s: DB) -> Done:
    """Revoke the token this request was made with."""
    auth.logout(s, caller.session)
    return Done(detail="logged out")
