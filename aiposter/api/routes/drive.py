"""Google Drive push notifications: Google calls this when a connected account's changes move."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from aiposter.api.deps import DB, Application

router = APIRouter(prefix="/api/v1/drive", tags=["drive"])


@router.post("/push", status_code=200, responses={403: {"description": "unknown or forged notification"}})
def push(request: Request, s: DB, app: Application) -> Response:
    """A `changes.watch` notification (no bearer token: Google's `X-Goog-Channel-Token` is checked against
    the channel's stored secret). A valid one makes that account's feed due now; polling stays on."""
    from aiposter.sources.google_drive import channels
    from aiposter.sources.google_drive.push import PushRejected

    try:
        channels.receive(s, app.keyring, dict(request.headers))
    except PushRejected:
        return Response(status_code=403)
    return Response(status_code=200)
