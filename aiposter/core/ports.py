"""The ports: what the core asks of a source, a captioner and a publisher. Adapters implement them.

An adapter is built from the registry (:mod:`aiposter.core.registry`) with ``build(deps)``, where ``deps``
is an :class:`~aiposter.core.registry.AdapterDeps`; it never sees the pipeline's context. The pipeline
builds one adapter per worker thread, so an adapter may hold a client that is not thread-safe (httplib2,
under google-api-python-client, is not).

Errors cross these ports as :class:`~aiposter.core.errors.StepError` subclasses (``permanent``,
``retry_after``, ``code``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

# =========================================================================== sources


@dataclass(frozen=True)
class WatchRef:
    """What a source needs to know about a watch (kept free of ORM objects)."""

    id: int
    user_id: int
    folder: str
    connection_id: int | None = None
    cursor: str | None = None


@dataclass
class RemoteFile:
    ref: str                 # stable identity within the watch: relative path, or a Drive file id
    name: str
    size: int | None
    arrived_at: datetime     # when the file came into the folder (for maximum_age and ordering)
    fingerprint: str = ""    # content identity (md5, or size+mtime)
    mime_type: str = ""
    description: str = ""
    ready: bool = True       # False while the file is still being written


@dataclass
class Listing:
    files: list[RemoteFile]
    cursor: str | None = None          # opaque resume state, stored on the watch
    folder_name: str = ""
    removed: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str

    def list(self, watch: WatchRef) -> Listing:
        """Everything new or changed since ``watch.cursor`` (a full listing when the source has no feed)."""

    def fetch(self, watch: WatchRef, ref: str, dest: Path, max_bytes: int) -> None:
        """Write the file's bytes to ``dest``. Raise ImageError past ``max_bytes``; SourceError otherwise."""


# =========================================================================== captioners


@dataclass
class CaptionRequest:
    image_path: Path                # the prepared JPEG: oriented, metadata stripped
    file_name: str
    folder_name: str
    platforms: list[str]            # the watch's target platforms, e.g. ["instagram", "threads"]
    description: str = ""           # the file's description at the source (Drive), user data
    capture_date: datetime | None = None
    prompt_template: str | None = None
    brand_voice: str = ""
    default_hashtags: list[str] = field(default_factory=list)
    revision_note: str = ""         # the owner's request when regenerating in review ("shorter, no emoji")


@dataclass
class CaptionResult:
    captions: dict[str, str]        # platform -> caption (already fitted to the platform's limits)
    hashtags: list[str] = field(default_factory=list)
    alt_text: str = ""
    usage: dict[str, Any] = field(default_factory=dict)  # provider, model, input_tokens, output_tokens


class Captioner(Protocol):
    name: str

    def caption(self, request: CaptionRequest) -> CaptionResult:
        """Raise CaptionError(permanent=...) on failure."""


# =========================================================================== publishers


def _no_checkpoint(handle: dict) -> None:
    raise RuntimeError("this request has no checkpoint (built outside the pipeline)")


@dataclass
class PublishRequest:
    """One step of publishing a post to one destination.

    ``handle`` is the last handle the publisher committed for this attempt (None: nothing done yet), and
    ``attempt_started_at`` when the first step of this attempt began: ``recover`` looks no further back.
    ``checkpoint(handle)`` commits a new handle durably, in its own transaction, and returns once it is
    committed: call it right after an irreversible call (a container was created) and before the next one,
    so that a crash in between resumes from the handle instead of starting over.
    """

    post_id: int
    target_id: int
    platform: str
    media_path: Path                     # the prepared JPEG, readable on this machine
    caption: str
    alt_text: str = ""
    file_name: str = ""
    connection_id: int | None = None
    media_url: str | None = None         # a signed, expiring public URL of the same JPEG (for platforms
    #                                      that fetch the image themselves); None when none can be made
    handle: dict | None = None
    attempt_started_at: datetime | None = None
    checkpoint: Callable[[dict], None] = _no_checkpoint
    extra: dict = field(default_factory=dict)
    credentials: Any = None              # the connection's Credentials, read in the transaction that read
    #                                      the target (None: the adapter loads them itself)

    @property
    def idempotency_key(self) -> str:
        return f"aiposter-{self.post_id}-{self.target_id}"


@dataclass
class Published:
    """The post is live on the platform."""

    platform_post_id: str
    url: str | None = None


@dataclass
class Pending:
    """Not done yet, nothing wrong: look again in ``wait_seconds`` with ``handle`` (JSON-serialisable),
    e.g. a container the platform is still processing. ``reason`` is shown to the user ("container
    processing"). The pipeline commits the handle and frees the worker meanwhile."""

    handle: dict
    wait_seconds: float
    reason: str


class Publisher(Protocol):
    """Answers one step at a time.

    Exactly-once rule: the pipeline commits the target as in flight before every call. If the process dies
    or the call's outcome is unknown, the next round calls :meth:`recover` first, and only a definite
    "nothing was published" (None) lets it send again.
    """

    platform: str

    def publish(self, request: PublishRequest) -> Published | Pending:
        """Take the next step from ``request.handle``. Raise PublishError(permanent=..., ambiguous=...)."""

    def recover(self, request: PublishRequest) -> Published | Pending | None:
        """After an interrupted step: the existing post (Published), a flow to continue from a handle
        (Pending), or None if it surely was not published and nothing is in progress (so a fresh attempt
        cannot duplicate). Raise PublishError(ambiguous=True) when the outcome cannot be known."""
