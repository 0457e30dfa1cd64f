"""Facebook Page photo posts: one irreversible upload, recovered by looking for it on the Page.

Flow (one step): ``POST /{page-id}/photos`` with the JPEG as multipart ``source`` (no public URL needed),
the caption as ``message`` and the alt text as ``alt_text_custom``; the answer's ``post_id`` is the
post, its ``permalink_url`` is read back.

There is no container and no idempotency key, so exactly-once rests on the handle committed *before*
the upload: ``{"step": "upload", "sent_at": ..., "caption": ...}``. If the upload's outcome is unknown
(crash, timeout, dropped connection), :meth:`FacebookPage.recover` lists the Page's posts and photos
created since ``sent_at`` (minus a clock-skew margin) and adopts the one with this caption. Only a
complete listing that does not contain it, once Facebook has had ``settle_seconds`` to show it, counts
as a definite "not there".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from aiposter.core.errors import PublishError
from aiposter.core.ports import Pending, Published
from aiposter.publishers.meta.graph import GraphClient
from aiposter.publishers.meta.steps import iso, parse_time, utcnow

FB_MAX_UPLOAD_BYTES = 10 * 1024 * 1024   # Page photos: Meta advises < 4 MB, refuses well above this
TRANSIENT = {"timeout", "connection", "server_error", "overloaded", "rate_limited", "quota", "auth", "config"}


def same_caption(a: str | None, b: str | None) -> bool:
    """Facebook trims and normalises line ends; compare what survives."""
    def norm(s: str | None) -> str:
        return " ".join((s or "").replace("\r\n", "\n").split())
    return norm(a) == norm(b)


class FacebookPage:
    """Publishes photos to one Page with that Page's access token."""

    platform = "facebook"

    def __init__(self, client: GraphClient, page_id: str, *, settle_seconds: float = 120.0,
                 clock_skew_seconds: float = 300.0, max_list_pages: int = 8, now=utcnow,
                 claimed: Callable[[], Iterable[str]] | None = None):
        self.client = client
        self.claimed = claimed or (lambda: ())  # post ids other targets already own (same caption twice)
        self.page_id = page_id
        self.settle_seconds = settle_seconds
        self.clock_skew = timedelta(seconds=clock_skew_seconds)
        self.max_list_pages = max_list_pages
        self.now = now

    # ------------------------------------------------------------------ the port

    def publish(self, req) -> Published | Pending:
        handle = req.handle or {}
        if handle.get("post_id"):
            return self._published(handle["post_id"])
        if handle.get("step") == "upload":
            # An earlier upload was sent and its answer lost (or was an error that may still have
            # committed, like a 500): look before sending again, whatever the pipeline did before.
            found = self.recover(req)
            if found is not None:
                return found
        data = _read_jpeg(req.media_path)
        # The upload is one-shot: commit when and with what caption we send it, so recovery can look.
        req.checkpoint({"step": "upload", "sent_at": iso(self.now()), "caption": req.caption})
        fields = {"message": req.caption}
        if req.alt_text:
            fields["alt_text_custom"] = req.alt_text
        body = self.client.post(f"{self.page_id}/photos", fields, irreversible=True,
                                files={"source": ("photo.jpg", data, "image/jpeg")})
        post_id = str(body.get("post_id") or "")
        if not post_id:  # an unpublished photo would come back without post_id; ours are published
            photo_id = str(body.get("id") or "")
            if not photo_id:
                raise PublishError("Facebook accepted the photo but returned no id", code="server_error",
                                   ambiguous=True)
            post_id = f"{self.page_id}_{photo_id}"
        return self._published(post_id)

    def recover(self, req) -> Published | Pending | None:
        handle = req.handle or {}
        if handle.get("post_id"):
            return self._published(handle["post_id"])
        sent_at = parse_time(handle.get("sent_at")) or req.attempt_started_at
        if sent_at is None:  # nothing was ever sent for this target
            return None
        caption = handle.get("caption", req.caption)
        try:
            found = self.find_post(caption, sent_at)
        except PublishError as exc:
            if exc.code in TRANSIENT:  # cannot look now: look again later, the outcome is still open
                raise
            raise PublishError(f"cannot tell whether the Facebook post exists: {exc.message}",
                               code=exc.code, permanent=True, ambiguous=True) from None
        if found:
            return found
        waited = (self.now() - sent_at).total_seconds()
        if waited < self.settle_seconds:
            return Pending(dict(handle), self.settle_seconds - waited,
                           "waiting for Facebook to list the Page's recent posts before sending again")
        return None

    # ------------------------------------------------------------------ helpers

    def find_post(self, caption: str, since: datetime) -> Published | None:
        """The Page's post or photo with this caption created at or after ``since`` (minus the skew
        margin), newest first. Raises when the listing cannot be completed."""
        floor = since - self.clock_skew
        claimed = set(self.claimed())
        params = {"since": int(floor.timestamp()), "limit": 25}
        for edge, fields, text_key in (("posts", "id,message,created_time,permalink_url", "message"),
                                       ("photos", "id,name,created_time,page_story_id,link", "name")):
            body = self.client.get(f"{self.page_id}/{edge}", {**params, "fields": fields,
                                                              **({"type": "uploaded"} if edge == "photos" else {})})
            for _ in range(self.max_list_pages):
                older = False
                for item in body.get("data") or []:
                    created = parse_time(item.get("created_time"))
                    if created is not None and created < floor:
                        older = True
                        continue
                    if same_caption(item.get(text_key), caption):
                        post_id = str(item["id"]) if edge == "posts" else \
                            str(item.get("page_story_id") or f"{self.page_id}_{item['id']}")
                        if post_id in claimed:
                            continue
                        if edge == "posts":
                            return Published(post_id, item.get("permalink_url"))
                        return self._published(post_id)
                nxt = (body.get("paging") or {}).get("next")
                if older or not nxt:
                    break
                body = self.client.get_url(nxt)
            else:
                raise PublishError(f"Facebook listed more than {self.max_list_pages} pages of recent {edge} "
                                   "without reaching the attempt's start", code="bad_request")
        return None

    def _published(self, post_id: str) -> Published:
        """The post exists: a failed permalink read must not turn that into an error."""
        try:
            url = self.client.get(post_id, {"fields": "permalink_url"}).get("permalink_url")
        except PublishError:
            url = None
        return Published(post_id, url or f"https://www.facebook.com/{post_id}")


def _read_jpeg(path: Path | str | None) -> bytes:
    if not path:
        raise PublishError("no prepared image for this post", permanent=True, code="media_missing")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PublishError(f"prepared image missing: {path}", permanent=True, code="media_missing") from None
    except OSError as exc:
        raise PublishError(f"cannot read the prepared image {path}: {exc.strerror}", code="io") from None
    if len(data) > FB_MAX_UPLOAD_BYTES:
        raise PublishError(f"the image is {len(data) / 1e6:.1f} MB; Facebook Page photos take at most "
                           f"{FB_MAX_UPLOAD_BYTES // 2**20} MB", permanent=True, code="media")
    return data
