"""Captioners: turn a prepared image into per-platform captions. One module per provider, each implementing
:class:`aiposter.core.ports.Captioner` and exposing ``build(deps)``; registered in
:mod:`aiposter.core.registry`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiposter.core import registry

if TYPE_CHECKING:
    from aiposter.config import Config
    from aiposter.core.ports import Captioner


def build(name: str, cfg: Config) -> Captioner:
    """A captioner that needs nothing but the config (all of them today)."""
    return registry.build(registry.CAPTIONER, name, registry.AdapterDeps(cfg))


def check(name: str, cfg: Config) -> str | None:
    """Why the captioner ``name`` cannot work with this config (e.g. no API key), or None if it can.
    Building an adapter only sets up its SDK client: no request is sent."""
    from aiposter.captioners.template import check_template
    from aiposter.core.errors import StepError

    try:
        build(name, cfg)
    except StepError as exc:
        return str(exc)
    # The install's own template (or LLM instruction) is a template too: refuse it before photos wait on it.
    key, text = (("[captioner.template] template", cfg.captioner.template.template) if name == "template"
                 else ("[captioner] prompt", cfg.captioner.prompt))
    problem = check_template(text)
    return f"{key} {problem}" if problem else None
