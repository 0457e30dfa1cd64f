"""Which accounts a token can publish to: the Page/Instagram picker after Facebook Login, and the
check behind ``aiposter connect import`` (a token an operator already has, verified before storing).

All functions take a :class:`~aiposter.publishers.meta.graph.GraphClient` already holding the token
and return plain dataclasses; errors are ``PublishError`` (``auth`` = the token is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from aiposter.core.errors import PublishError
from aiposter.publishers.meta.graph import GraphClient

MAX_LIST_PAGES = 20  # /me/accounts pages followed (25 Pages each)


@dataclass
class PageChoice:
    """A Page the user manages, with its token and the Instagram account linked to it, if any."""

    page_id: str
    name: str
    access_token: str
    tasks: list[str] = field(default_factory=list)
    instagram_id: str | None = None
    instagram_username: str | None = None

    @property
    def can_publish(self) -> bool:
        """Meta lists Pages where the user has any task; posting needs CREATE_CONTENT. Older API
        answers omit ``tasks``: then trust the listing."""
        return not self.tasks or "CREATE_CONTENT" in self.tasks or "MANAGE" in self.tasks


@dataclass
class ImportedAccount:
    """What a connection stores: whose account, its secrets, when the token expires (None: never)."""

    platform: str
    account_id: str
    account_name: str
    secrets: dict
    expires_at: datetime | None = None


def list_pages(client: GraphClient, *, max_pages: int = MAX_LIST_PAGES) -> list[PageChoice]:
    """The Pages (and linked Instagram professional accounts) a Facebook user token can publish to."""
    body = client.get("me/accounts", {"fields": "id,name,access_token,tasks,instagram_business_account{id,username}",
                                      "limit": 25})
    out: list[PageChoice] = []
    for _ in range(max_pages):
        for p in body.get("data") or []:
            if not p.get("id") or not p.get("access_token"):
                continue
            ig = p.get("instagram_business_account") or {}
            out.append(PageChoice(str(p["id"]), str(p.get("name") or ""), str(p["access_token"]),
                                  [str(t) for t in p.get("tasks") or []],
                                  str(ig["id"]) if ig.get("id") else None, ig.get("username")))
        nxt = (body.get("paging") or {}).get("next")
        if not nxt:
            break
        body = client.get_url(nxt)
    return out


def check_threads_token(client: GraphClient) -> ImportedAccount:
    """A Threads token: whose it is (``/me``) and that it may publish (``threads_publishing_limit``)."""
    me = client.get("me", {"fields": "id,username"})
    user_id = str(me.get("id") or "")
    if not user_id:
        raise PublishError("Threads did not say whose token this is", code="bad_request", permanent=True)
    client.get(f"{user_id}/threads_publishing_limit", {"fields": "quota_usage,config"})
    return ImportedAccount("threads", user_id, str(me.get("username") or ""),
                           {"access_token": client.token, "user_id": user_id})


def check_page_token(client: GraphClient) -> ImportedAccount:
    """A Facebook Page token: ``/me`` is the Page itself."""
    me = client.get("me", {"fields": "id,name"})
    page_id = str(me.get("id") or "")
    if not page_id:
        raise PublishError("Facebook did not say which Page this token is for", code="bad_request", permanent=True)
    return ImportedAccount("facebook", page_id, str(me.get("name") or ""), {"access_token": client.token})


def check_instagram_token(client: GraphClient) -> ImportedAccount:
    """A Page token whose Page has an Instagram professional account linked; checks the account's
    publishing limit is readable (``instagram_content_publish`` granted)."""
    me = client.get("me", {"fields": "id,name,instagram_business_account{id,username}"})
    ig = me.get("instagram_business_account") or {}
    if not ig.get("id"):
        raise PublishError(f"the Page {me.get('name') or me.get('id') or ''} has no Instagram professional "
                           "account linked", code="bad_request", permanent=True)
    client.get(f"{ig['id']}/content_publishing_limit", {"fields": "quota_usage,config"})
    return ImportedAccount("instagram", str(ig["id"]), str(ig.get("username") or me.get("name") or ""),
                           {"access_token": client.token, "page_id": str(me.get("id") or "")})
