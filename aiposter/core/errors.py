"""Errors that cross the adapter boundary. Each says whether retrying can help.

``permanent=True``: retrying cannot help (corrupt image, revoked token, content refused) -> fail now.
``permanent=False``: a transport or capacity problem (timeout, 429, 5xx) -> retry with backoff.
``retry_after``: seconds the remote asked us to wait (e.g. from a Retry-After header).
"""

from __future__ import annotations


class StepError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.code = code  # a short machine-readable class for metrics: "timeout", "rate_limited", ...

    def __str__(self) -> str:
        return self.message


class SourceError(StepError):
    """Listing or fetching from a source (local folder, Drive) failed."""


class ImageError(StepError):
    """The file is not an image we can post (corrupt, empty, too large, unsupported). Always permanent."""

    def __init__(self, message: str, *, code: str = "bad_image"):
        super().__init__(message, permanent=True, code=code)


class CaptionError(StepError):
    """The captioner failed: outage (transient), refusal or content block (permanent)."""


class PublishError(StepError):
    """A platform refused or failed the post.

    ``ambiguous=True``: the request may have gone through (timeout after sending). The pipeline never
    re-sends such a post blindly: it asks the publisher to ``recover`` first.
    """

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 code: str | None = None, ambiguous: bool = False):
        super().__init__(message, permanent=permanent, retry_after=retry_after, code=code)
        self.ambiguous = ambiguous
