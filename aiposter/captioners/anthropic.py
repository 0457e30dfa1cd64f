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
    refused,
    status_error,
    timed_out,
    unreachable,
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
        except anthropic.APITimeoutError:
            raise timed_out(self.provider, self.cfg.timeout) from None
        except anthropic.APIConnectionError as exc:
            raise unreachable(self.provider, exc) from None
        except anthropic.APIStatusError as exc:
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            error = error if isinstance(error, dict) else {}
            raise status_error(self.provider, exc.status_code, error.get("message") or exc.message,
                               headers=exc.response.headers, error_code=error.get("type")) from None
        if message.stop_reason == "refusal":
            details = message.stop_details
            reason = (details and (details.explanation or details.category)) or "no reason given"
            raise refused(self.provider, reason)
        text = "".join(block.text for block in message.content if block.type == "text")
        return Reply(text, message.usage.input_tokens, message.usage.output_tokens)


def build(deps: AdapterDeps) -> LLMCaptioner:
    cfg = deps.cfg
    provider_cfg = cfg.captioner.anthropic
    return LLMCaptioner("anthropic", MessagesBackend(provider_cfg, api_key(provider_cfg, "anthropic")),
                        provider_cfg, cfg)
