"""Instagram (professional account, Instagram API with Facebook Login): an image container created from
the public media URL, published once ``status_code`` is ``FINISHED``. Published with the linked Page's
token on the Graph host. The shared flow and its handle are in :mod:`.containers`."""

from __future__ import annotations

from aiposter.publishers.meta.containers import ContainerPublisher

IG_CAPTION_MAX = 2200
IG_ALT_TEXT_MAX = 1000


class InstagramAccount(ContainerPublisher):
    platform = "instagram"
    who = "Instagram"
    create_edge = "media"
    publish_edge = "media_publish"
    limit_edge = "content_publishing_limit"
    list_edge = "media"
    text_field = "caption"
    status_field = "status_code"
    status_detail = "status"

    def create_params(self, req) -> dict:
        params = {"image_url": req.media_url, "caption": req.caption}
        if req.alt_text:
            params["alt_text"] = req.alt_text[:IG_ALT_TEXT_MAX]
        return params
