"""The ``template`` captioner: no LLM, the caption is a sandboxed Jinja2 template.

Variables: ``file_name``, ``file_stem``, ``folder``, ``description``, ``capture_date`` (YYYY-MM-DD or
empty), ``platforms``, ``brand_voice``, ``hashtags`` (the default hashtags, joined, each with ``#``).
A watch's ``prompt_template`` replaces the configured template for that watch.
"""

from __future__ import annotations

from pathlib import PurePath

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aiposter.captioners.fitting import fit_alt_text, fit_caption
from aiposter.config import Config
from aiposter.core.errors import CaptionError
from aiposter.core.ports import CaptionRequest, CaptionResult

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def normalize_hashtags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        t = "".join(ch for ch in tag.strip().lstrip("#") if ch.isalnum() or ch == "_")
        if t and f"#{t}" not in out:
            out.append(f"#{t}")
    return out


def check_template(text: str) -> str | None:
    """The syntax error in ``text``, or None: used to validate watch input before saving it."""
    try:
        _env.parse(text)
    except TemplateError as exc:
        return str(exc)
    return None


def render(text: str, variables: dict) -> str:
    try:
        return _env.from_string(text).render(**variables).strip()
    except TemplateError as exc:
        raise CaptionError(f"the caption template failed: {exc}", permanent=True, code="template") from None


class TemplateCaptioner:
    name = "template"

    def __init__(self, cfg: Config):
        self.cfg = cfg.captioner.template

    def caption(self, request: CaptionRequest) -> CaptionResult:
        tags = normalize_hashtags(request.default_hashtags or self.cfg.default_hashtags)
        variables = {
            "file_name": request.file_name,
            "file_stem": PurePath(request.file_name).stem,
            "folder": request.folder_name,
            "description": request.description,
            "capture_date": request.capture_date.strftime("%Y-%m-%d") if request.capture_date else "",
            "platforms": list(request.platforms),
            "brand_voice": request.brand_voice,
            "hashtags": " ".join(tags),
        }
        text = render(request.prompt_template or self.cfg.template, variables)
        return CaptionResult(
            captions={p: fit_caption(text, p) for p in request.platforms},
            hashtags=tags,
            alt_text=fit_alt_text(f"Photo: {variables['file_stem'].replace('_', ' ')}"),
            usage={"provider": "template"},
        )


def build(deps) -> TemplateCaptioner:
    return TemplateCaptioner(deps.cfg)
