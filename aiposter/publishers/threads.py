"""The threads destination (registry entry): see :mod:`aiposter.publishers.meta.wiring` and docs/publishing.md."""

from aiposter.publishers.meta.wiring import build_threads as build

__all__ = ["build"]
