"""The ``openai_compatible`` captioner: the ``openai`` SDK pointed at a local or self-hosted server that
speaks ``/v1/chat/completions`` (Ollama, vLLM, LM Studio, llama.cpp). ``base_url`` includes ``/v1``.

Such servers vary in what they support: set ``structured_output`` to ``json_object`` or ``none`` when the
server rejects JSON schemas; the answer is then parsed from plain text (```json fences tolerated).
"""

from __future__ import annotations

from aiposter.captioners.llm import LLMCaptioner
from aiposter.captioners.openai import ChatBackend
from aiposter.core.errors import CaptionError
from aiposter.core.registry import AdapterDeps

# The SDK insists on a key; local servers ignore it (Ollama documents exactly this placeholder).
PLACEHOLDER_KEY = "ollama"


def build(deps: AdapterDeps) -> LLMCaptioner:
    cfg = deps.cfg
    provider_cfg = cfg.captioner.openai_compatible
    if not provider_cfg.base_url:
        # Without it the SDK would quietly send the images to api.openai.com.
        raise CaptionError("the openai_compatible captioner needs [captioner.openai_compatible] base_url, "
                           "e.g. http://127.0.0.1:11434/v1", permanent=True, code="config")
    key = provider_cfg.api_key.get_secret_value() if provider_cfg.api_key else ""
    backend = ChatBackend("openai_compatible", provider_cfg, key or PLACEHOLDER_KEY,
                          max_tokens_param="max_tokens")
    return LLMCaptioner("openai_compatible", backend, provider_cfg, cfg)
