"""The instagram destination (registry entry): see :mod:`aiposter.publishers.meta.wiring` and docs/publishing.md."""

from aiposter.publishers.meta.wiring import build_instagram as build

__all__ = ["build"]
