"""Captioners: turn a prepared image into per-platform captions. One module per provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiposter.captioners.base import Captioner
    from aiposter.config import Config

CAPTIONERS = ("template", "openai", "gemini", "anthropic", "openai_compatible")


def build(name: str, cfg: Config) -> Captioner:
    if name == "template":
        from aiposter.captioners.template import TemplateCaptioner

        return TemplateCaptioner(cfg)
    if name in ("openai", "gemini", "anthropic", "openai_compatible"):
        import importlib

        module = importlib.import_module(f"aiposter.captioners.{name}")
        return module.build(cfg)
    raise ValueError(f"unknown captioner {name!r} (known: {', '.join(CAPTIONERS)})")


def check(name: str, cfg: Config) -> str | None:
    """Why the captioner ``name`` cannot work with this config (e.g. no API key), or None if it can.
    Building an adapter only sets up its SDK client: no request is sent."""
    from aiposter.captioners.template import check_template
    from aiposter.core.errors import CaptionError

    try:
        build(name, cfg)
    except CaptionError as exc:
        return str(exc)
    # The install's own template (or LLM instruction) is a template too: refuse it before photos wait on it.
    key, text = (("[captioner.template] template", cfg.captioner.template.template) if name == "template"
                 else ("[captioner] prompt", cfg.captioner.prompt))
    problem = check_template(text)
    return f"{key} {problem}" if problem else None
