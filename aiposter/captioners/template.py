"""The ``template`` captioner: no LLM, the caption is a sandboxed Jinja2 template.

Variables: ``file_name``, ``file_stem``, ``folder``, ``description``, ``capture_date`` (YYYY-MM-DD or
empty), ``platforms``, ``brand_voice``, ``hashtags`` (the default hashtags, joined, each with ``#``).
A watch's ``prompt_template`` replaces the configured template for that watch.
"""

from __future__ import annotations

from pathlib import PurePath

from jinja2 import TemplateError

from aiposter.captioners import sandbox
from aiposter.captioners.fitting import fit_alt_text, fit_caption
from aiposter.config import Config
from aiposter.core.errors import CaptionError
from aiposter.core.ports import CaptionRequest, CaptionResult

# What a template is tried on when it is saved, to refuse one that goes over a limit before any photo waits
# on it. The values are of the kinds a real render gets (the LLM prompt gets the same names, JSON-quoted).
SAMPLE_VARIABLES = {
    "file_name": "IMG_0001.jpg", "file_stem": "IMG_0001", "folder": "Holidays",
    "description": "A sample description", "capture_date": "2024-07-14",
    "platforms": ["facebook", "instagram", "threads"], "brand_voice": "", "hashtags": "#travel #summer",
}


def normalize_hashtags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        t = "".join(ch for ch in tag.strip().lstrip("#") if ch.isalnum() or ch == "_")
        if t and f"#{t}" not in out:
            out.append(f"#{t}")
    return out


def check_template(text: str) -> str | None:
    """What is wrong with ``text`` (a syntax error, or a rendering limit it goes over on sample values), or
    None: used to validate a template before saving it. Other render errors (an unknown variable, a
    division by zero) can depend on the photo, so they are reported when a post is captioned."""
    try:
        sandbox.env.parse(text)
    except TemplateError as exc:
        return f"has a syntax error: {exc}"
    try:
        sandbox.render(text, SAMPLE_VARIABLES)
    except sandbox.TemplateLimitError as exc:
        return f"goes over a limit: {exc}"
    except RecursionError:
        return "goes over a limit: it recurses without end"
    except Exception:  # noqa: BLE001 - see the docstring
        pass
    return None


def render(text: str, variables: dict) -> str:
    """Render a user's template within the sandbox's limits; any failure is the template's, permanent,
    with a message for the person who wrote it."""
    try:
        return sandbox.render(text, variables).strip()
    except TemplateError as exc:
        reason = str(exc)
    except RecursionError:
        reason = "it recurses without end"
    except Exception as exc:  # noqa: BLE001 - a user's template can raise anything (1/0, int('x'), ...)
        reason = f"{exc.__class__.__name__}: {exc}"
    raise CaptionError(f"the caption template failed: {reason}", permanent=True, code="template") from None


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
