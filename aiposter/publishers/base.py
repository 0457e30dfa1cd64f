"""The publisher port.

Exactly-once rule: the pipeline commits the target as ``publishing`` before calling :meth:`publish`.
If the process dies or the call times out, the next attempt first calls :meth:`recover`, which must
answer from the platform (or the outbox) whether the post already exists. Only a definite "not
published" lets the pipeline send again; an unknown outcome fails the target for a person to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class PublishRequest:
    post_id: int
    target_id: int
    platform: str
    media_path: Path
    caption: str
    alt_text: str = ""
    file_name: str = ""
    connection_id: int | None = None
    container_id: str | None = None      # set by a previous attempt (IG/Threads containers)
    extra: dict = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"aiposter-{self.post_id}-{self.target_id}"


@dataclass
class PublishResult:
    platform_post_id: str
    url: str | None = None


class Publisher(Protocol):
    platform: str

    def publish(self, request: PublishRequest) -> PublishResult:
        """Raise PublishError(permanent=..., ambiguous=...) on failure."""

    def recover(self, request: PublishRequest) -> PublishResult | None:
        """After an interrupted attempt: the existing post, or None if it surely was not published.
        Raise PublishError(ambiguous=True) when the outcome cannot be known."""
