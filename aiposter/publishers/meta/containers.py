"""The container flow Instagram and Threads share: quota check, media URL probe, create a container,
wait for it without sleeping, publish it, read the permalink.

Handle (committed by the pipeline between steps; ``checkpoint`` before the first irreversible call):

    {"container_id": "...", "created_at": "<iso>", "caption": "...", "polls": N}

Exactly-once rests on the container: a container is published at most once, and its status says
whether it was (``PUBLISHED``). Nothing is published without a committed container id, so no handle
means nothing was published. A container created but not committed (crash right after creation) is an
orphan that expires unpublished in 24 h; it costs one of the 400 daily container creations, never a
post.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published
from aiposter.publishers.meta.graph import QUOTA_WAIT, SUBCODE_TEXT, GraphClient
from aiposter.publishers.meta.steps import iso, parse_time, probe_media_url, utcnow

TRANSIENT = {"timeout", "connection", "server_error", "overloaded", "rate_limited", "quota", "auth", "config"}
QUOTA_PROBE_HOURS = (1, 3, 6, 12, 18)   # when the rolling window frees: the first offset with room


class ContainerPublisher:
    """Platform specifics are class attributes; see :class:`InstagramAccount` and
    :class:`ThreadsAccount`."""

    platform = ""
    who = ""
    create_edge = ""
    publish_edge = ""
    limit_edge = ""
    list_edge = ""
    text_field = ""           # what the listing calls the caption
    status_field = ""         # IG: status_code; Threads: status
    status_detail = ""        # IG: status; Threads: error_message
    error_texts: dict[str, str] = {}

    def __init__(self, client: GraphClient, user_id: str, *, poll_seconds: float = 5.0,
                 max_poll_seconds: float = 60.0, max_wait_seconds: float = 900.0,
                 probe=probe_media_url, now=utcnow, list_limit: int = 25,
                 claimed: Callable[[], Iterable[str]] | None = None):
        self.client = client
        client.who = self.who  # messages name the platform, not the Graph host
        self.user_id = user_id
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.max_wait = timedelta(seconds=max_wait_seconds)
        self.probe = probe
        self.now = now
        self.list_limit = list_limit
        self.claimed = claimed or (lambda: ())  # media ids other targets already own

    def create_params(self, req) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ the port

    def publish(self, req) -> Published | Pending:
        handle = dict(req.handle or {})
        if handle.get("media_id"):
            return self._published(handle["media_id"])
        if not handle.get("container_id"):
            self.check_quota()          # never create a container that cannot be published today
            self.probe(req.media_url, self.who)
            created_at = self.now()
            body = self.client.post(f"{self.user_id}/{self.create_edge}", self.create_params(req))
            cid = str(body.get("id") or "")
            if not cid:
                raise PublishError(f"{self.who} created no container (answer without id)", code="server_error")
            handle = {"container_id": cid, "created_at": iso(created_at), "caption": req.caption, "polls": 0}
            req.checkpoint(handle)      # before media_publish, the irreversible call
        return self._advance(handle)

    def recover(self, req) -> Published | Pending | None:
        handle = dict(req.handle or {})
        if handle.get("media_id"):
            return self._published(handle["media_id"])
        if not handle.get("container_id"):
            return None                 # no committed container: nothing can have been published
        try:
            code, detail = self.status(handle["container_id"])
            if code == "PUBLISHED":
                return self._adopt(handle)
            if code == "FINISHED":
                # Not published (a container is published at most once and then says so): continue
                # from it. Not a caption search: two posts may share a caption, and adopting the other
                # one would silently skip this post.
                return Pending(handle, 0, f"{self.who} container is ready; publishing it")
        except PublishError as exc:
            if exc.code in TRANSIENT:
                raise
            raise PublishError(f"cannot tell whether the {self.who} post exists: {exc.message}",
                               code=exc.code, permanent=True, ambiguous=True) from None
        if code in ("IN_PROGRESS", ""):
            return self._wait(handle, code or "no status yet")
        raise self._failed(handle, code, detail)

    # ------------------------------------------------------------------ steps

    def check_quota(self) -> None:
        usage, total, duration = self.quota()
        if total and usage >= total:
            wait = self._quota_frees_in(total, duration)
            raise PublishError(
                f"{self.who} publishing limit reached ({usage} of {total} posts in {duration // 3600} h); "
                f"next slot in about {_human(wait)}", code="quota", retry_after=wait)

    def quota(self, since: datetime | None = None) -> tuple[int, int, int]:
        params = {"fields": "quota_usage,config"}
        if since is not None:
            params["since"] = str(int(since.timestamp()))
        data = self.client.get(f"{self.user_id}/{self.limit_edge}", params).get("data") or [{}]
        row = data[0] if isinstance(data[0], dict) else {}
        cfg = row.get("config") or {}
        return int(row.get("quota_usage") or 0), int(cfg.get("quota_total") or 0), \
            int(cfg.get("quota_duration") or 86400)

    def _quota_frees_in(self, total: int, duration: int) -> float:
        """Posts older than the window stop counting; ask how many were made since later and later
        points in the window until there is room. An upper bound within an hour or so, in ≤ 5 calls."""
        now = self.now()
        for hours in QUOTA_PROBE_HOURS:
            if hours * 3600 >= duration:
                break
            try:
                used, _, _ = self.quota(since=now - timedelta(seconds=duration) + timedelta(hours=hours))
            except PublishError:
                return QUOTA_WAIT
            if used < total:
                return hours * 3600.0
        return float(duration)  # full at every probe: by then every post counted now has left the window

    def status(self, container_id: str) -> tuple[str, str]:
        body = self.client.get(container_id, {"fields": f"{self.status_field},{self.status_detail}"})
        return str(body.get(self.status_field) or ""), str(body.get(self.status_detail) or "")

    def _advance(self, handle: dict) -> Published | Pending:
        code, detail = self.status(handle["container_id"])
        if code == "FINISHED":
            return self._publish(handle)
        if code == "PUBLISHED":
            return self._adopt(handle)
        if code in ("IN_PROGRESS", ""):
            return self._wait(handle, code or "no status yet")
        raise self._failed(handle, code, detail)

    def _wait(self, handle: dict, code: str) -> Pending:
        created = parse_time(handle.get("created_at")) or self.now()
        waited = self.now() - created
        if waited > self.max_wait:
            raise PublishError(f"{self.who} was still processing the image ({code}) after "
                               f"{_human(waited.total_seconds())}; giving up on this container",
                               permanent=True, code="container_timeout")
        polls = int(handle.get("polls") or 0)
        handle = {**handle, "polls": polls + 1}
        delay = min(self.poll_seconds * (2 ** min(polls, 10)), self.max_poll_seconds)
        return Pending(handle, delay, f"{self.who} is processing the image ({code})")

    def _publish(self, handle: dict) -> Published | Pending:
        try:
            body = self.client.post(f"{self.user_id}/{self.publish_edge}",
                                    {"creation_id": handle["container_id"]}, irreversible=True)
        except PublishError as exc:
            if exc.code == "not_ready":
                return self._wait(handle, "not ready to publish")
            if exc.code == "quota":
                usage, total, duration = self._quota_or_unknown()
                wait = self._quota_frees_in(total, duration) if total and usage >= total else exc.retry_after
                raise PublishError(exc.message, code="quota", retry_after=wait) from None
            raise
        media_id = str(body.get("id") or "")
        if not media_id:
            raise PublishError(f"{self.who} published but returned no media id", code="server_error",
                               ambiguous=True)
        return self._published(media_id)

    def _quota_or_unknown(self) -> tuple[int, int, int]:
        try:
            return self.quota()
        except PublishError:
            return 0, 0, 0

    def _adopt(self, handle: dict) -> Published:
        """The container is PUBLISHED: find the media it became (the container id is not the media
        id). If the listing does not show it, the post still exists: never publish again."""
        found = self.find_media(handle)
        return found or Published(f"container:{handle['container_id']}", None)

    def find_media(self, handle: dict) -> Published | None:
        created = parse_time(handle.get("created_at"))
        floor = created - timedelta(minutes=5) if created else None
        claimed = set(self.claimed())
        body = self.client.get(f"{self.user_id}/{self.list_edge}",
                               {"fields": f"id,{self.text_field},timestamp,permalink", "limit": self.list_limit})
        for item in body.get("data") or []:
            ts = parse_time(item.get("timestamp"))
            if (floor and ts and ts < floor) or str(item.get("id")) in claimed:
                continue
            if (item.get(self.text_field) or "").strip() == (handle.get("caption") or "").strip():
                return Published(str(item["id"]), item.get("permalink"))
        return None

    def _published(self, media_id: str) -> Published:
        try:
            url = self.client.get(media_id, {"fields": "id,permalink"}).get("permalink")
        except PublishError:
            url = None  # the post exists; a failed read-back must not turn it into an error
        return Published(media_id, url)

    def _failed(self, handle: dict, code: str, detail: str) -> PublishError:
        if code == "EXPIRED":
            return PublishError(f"{self.who} container expired before it was published (containers last "
                                "24 h)", permanent=True, code="container_gone")
        return PublishError(f"{self.who} could not process the image: {self.explain(detail)} ({code})",
                            permanent=True, code="media")

    def explain(self, detail: str) -> str:
        """The platform's status text, with a readable meaning when it carries a known code."""
        if detail in self.error_texts:
            return f"{self.error_texts[detail]} [{detail}]"
        for digits in re.findall(r"\d{6,8}", detail or ""):
            if int(digits) in SUBCODE_TEXT:
                return f"{SUBCODE_TEXT[int(digits)]} [{detail}]"
        return detail or "no reason given"


def _human(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
