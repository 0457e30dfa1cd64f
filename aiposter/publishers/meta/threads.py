"""Threads: an IMAGE container (``media_type=IMAGE``, ``image_url``, ``text``, ``alt_text``) on
graph.threads.net, published with ``threads_publish`` once ``status`` is ``FINISHED``. The shared flow
and its handle are in :mod:`.containers`; Threads names the status field ``status`` (Instagram:
``status_code``) and explains failures in ``error_message``."""

from __future__ import annotations

from aiposter.publishers.meta.containers import ContainerPublisher

THREADS_VERSION = "v1.0"


class ThreadsAccount(ContainerPublisher):
    platform = "threads"
    who = "Threads"
    create_edge = "threads"
    publish_edge = "threads_publish"
    limit_edge = "threads_publishing_limit"
    list_edge = "threads"
    text_field = "text"
    status_field = "status"
    status_detail = "error_message"
    error_texts = {
        "INVALID_ASPEC_RATIO": "the image's aspect ratio is not accepted (at most 10:1)",
        "UNKNOWN": "Threads gave no reason",
        "FAILED_DOWNLOADING_VIDEO": "Threads could not download the media",
    }

    def __init__(self, client, user_id: str, **kw):
        kw.setdefault("poll_seconds", 10.0)     # Meta: about 30 s on average; first look sooner
        kw.setdefault("max_wait_seconds", 600.0)  # Meta: poll once a minute for up to 5 minutes
        super().__init__(client, user_id, **kw)

    def create_params(self, req) -> dict:
        params = {"media_type": "IMAGE", "image_url": req.media_url, "text": req.caption}
        if req.alt_text:
            params["alt_text"] = req.alt_text
        return params
