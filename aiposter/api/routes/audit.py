"""The audit log, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiposter.api.deps import DB, Admin
from aiposter.api.errors import responses
from aiposter.api.schemas import AuditEventOut, AuditPage, RowId, Text
from aiposter.services import audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit (admin)"], responses=responses(401, 403, 422))


@router.get("", response_model=AuditPage)
def list_audit(_: Admin, s: DB,
               action: Annotated[Text(50) | None, Query(description="Only this action.")] = None,
               user_id: Annotated[RowId | None, Query(description="Only events where this user acted or was "
                                                                  "acted on.")] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100,
               cursor: Annotated[RowId | None, Query(description="next_cursor of the previous page")] = None,
               ) -> AuditPage:
    """Logins, user administration, connections, exports and deletions: who, what, when, from where.
    Newest first."""
    rows = audit.list_events(s, limit=limit, before_id=cursor, action=action or None, user_id=user_id)
    return AuditPage(items=[AuditEventOut.model_validate(audit.event_dict(e)) for e in rows],
                     next_cursor=rows[-1].id if len(rows) == limit else None)
