"""Publishers: send a captioned image to one destination. One module per platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiposter.config import Config
    from aiposter.publishers.base import Publisher

PLATFORMS = ("outbox", "facebook", "instagram", "threads")
NEEDS_CONNECTION = ("facebook", "instagram", "threads")


def build(platform: str, cfg: Config, **deps) -> Publisher:
    if platform == "outbox":
        from aiposter.publishers.outbox import OutboxPublisher

        return OutboxPublisher(cfg)
    if platform in ("facebook", "instagram", "threads"):
        import importlib

        module = importlib.import_module(f"aiposter.publishers.{platform}")  # lands with the Meta issue
        return module.build(cfg, **deps)
    raise ValueError(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})")
