"""Operations: liveness, readiness, Prometheus metrics (no authentication, as probes and scrapers expect)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from aiposter import metrics
from aiposter.api.deps import Application
from aiposter.api.schemas import Health, Readiness
from aiposter.db import pending_migrations

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive and serving."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request, app: Application):
    """Ready: the database answers, no migration is pending, and the scheduler runs (when this process
    has one: `aiposter api` serves without it)."""
    database, pending = "ok", []
    try:
        with app.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        pending = pending_migrations(app.engine)
    except Exception as exc:  # noqa: BLE001 - any failure here is "not ready", reported, not raised
        database = f"error: {exc.__class__.__name__}"
    daemon = request.app.state.daemon
    scheduler = "not_in_this_process" if daemon is None else ("running" if daemon.running else "stopped")
    ready = database == "ok" and not pending and scheduler != "stopped"
    body = Readiness(ready=ready, database=database, scheduler=scheduler, pending_migrations=pending)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format."}})
def prometheus(request: Request, app: Application) -> Response:
    return Response(metrics.render(app.engine, request.app.state.daemon), media_type=metrics.CONTENT_TYPE)
