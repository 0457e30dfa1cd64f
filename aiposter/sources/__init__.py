"""Sources: where images come from. One module per service; each implements :class:`base.Source`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiposter.config import Config
    from aiposter.sources.base import Source

SOURCES = ("local", "google_drive")


def build(name: str, cfg: Config, **deps) -> Source:
    if name == "local":
        from aiposter.sources.local import LocalSource

        return LocalSource(cfg)
    if name == "google_drive":
        from aiposter.sources.google_drive import DriveSource  # lands with the Drive issue

        return DriveSource(cfg, **deps)
    raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")
