"""The ``anthropic`` captioner: the Messages API through the official ``anthropic`` SDK, the image as a
base64 block placed before the text, as Anthropic recommends. ``base_url`` excludes ``/v1``.

With ``structured_output = "json_schema"`` the answer is constrained by ``output_config.format``; models
that predate structured outputs need ``"none"``, and then only the prompt asks for JSON.
"""

from __future__ import annotations

from typing import Any

import anthropic

from aiposter.captioners.imaging import LLMImage
from aiposter.captioners.llm import (
    LLMCaptioner,
    Prompt,
    Reply,
    api_key,
    provider_error,
    refused,
)
from aiposter.config import LLMProviderConfig
from aiposter.core.registry import AdapterDeps


class MessagesBackend:
    provider = "anthropic"

    def __init__(self, cfg: LLMProviderConfig, key: str):
        self.model = cfg.model
        self.cfg = cfg
        self.client = anthropic.Anthropic(api_key=key, base_url=cfg.base_url or None, timeout=cfg.timeout,
                                          max_retries=cfg.max_retries)

    def complete(self, prompt: Prompt, image: LLMImage) -> Reply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.cfg.max_output_tokens,
            "system": prompt.system,
            "messages": [{"role": "user", "content": [
                {"type": "image",
                 "source": {"type": "base64", "media_type": image.mime_type, "data": image.b64()}},
                {"type": "text", "text": prompt.user_text},
            ]}],
        }
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.structured_output == "json_schema":
            kwargs["output_config"] = {"format": {"type": "json_schema", "schema": prompt.schema}}
        try:
            message = self.client.messages.create(**kwargs)
        except anthropic.APIError as exc:
            raise provider_error(self, exc, base_url=str(self.client.base_url),
                                 timeout=self.cfg.timeout) from None
        text = "".join(block.text for block in message.content if block.type == "text")
        if message.stop_reason == "refusal":
            raise refused(self.provider, _refusal_reason(message, text))
        return Reply(text, message.usage.input_tokens, message.usage.output_tokens,
                     truncated=message.stop_reason == "max_tokens")


def _refusal_reason(message: Any, text: str) -> str:
    """The best reason there is: ``stop_details`` (explanation, else category), else what the model wrote
    before it stopped, else a plain statement that none was given (and by whom)."""
    details = getattr(message, "stop_details", None)
    explanation = getattr(details, "explanation", None) or getattr(details, "category", None)
    if explanation:
        return str(explanation)
    if text.strip():
        return " ".join(text.split())[:300]
    return 'the model stopped with stop_reason "refusal" and the API gave no explanation (no stop_details)'


def build(deps: AdapterDeps) -> LLMCaptioner:
    cfg = deps.cfg
    provider_cfg = cfg.captioner.anthropic
    return LLMCaptioner("anthropic", MessagesBackend(provider_cfg, api_key(provider_cfg, "anthropic")),
                        provider_cfg, cfg)
