"""The captioner port."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol


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
