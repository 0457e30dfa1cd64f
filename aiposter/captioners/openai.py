"""The ``openai`` captioner: Chat Completions through the official ``openai`` SDK, the image inline as a
base64 data URL. ``openai_compatible`` reuses :class:`ChatBackend` against a local server.

Chat Completions rather than the Responses API because it is the one shape every OpenAI-compatible
server (Ollama, vLLM, LM Studio, llama.cpp) also speaks, so both captioners share one code path.
"""

from __future__ import annotations

from typing import Any

import openai

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


class ChatBackend:
    def __init__(self, provider: str, cfg: LLMProviderConfig, key: str, *, max_tokens_param: str):
        self.provider = provider
        self.model = cfg.model
        self.cfg = cfg
        # OpenAI's newer models accept only max_completion_tokens; most local servers only max_tokens.
        self.max_tokens_param = max_tokens_param
        self.client = openai.OpenAI(api_key=key, base_url=cfg.base_url or None, timeout=cfg.timeout,
                                    max_retries=cfg.max_retries)

    def complete(self, prompt: Prompt, image: LLMImage) -> Reply:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": image.data_url()}},
                    {"type": "text", "text": prompt.user_text},
                ]},
            ],
            self.max_tokens_param: self.cfg.max_output_tokens,
        }
        if self.cfg.temperature is not None:
            kwargs["temperature"] = self.cfg.temperature
        if self.cfg.structured_output == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "captions", "schema": prompt.schema, "strict": True}}
        elif self.cfg.structured_output == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.APIError as exc:
            raise provider_error(self, exc, base_url=str(self.client.base_url),
                                 timeout=self.cfg.timeout) from None
        usage = response.usage
        reply_usage = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens} \
            if usage else {}
        if not response.choices:
            return Reply("", **reply_usage)
        choice = response.choices[0]
        if choice.message.refusal:
            raise refused(self.provider, choice.message.refusal)
        if choice.finish_reason == "content_filter":
            raise refused(self.provider, "the answer was withheld by the content filter")
        return Reply(choice.message.content or "", **reply_usage, truncated=choice.finish_reason == "length")


def build(deps: AdapterDeps) -> LLMCaptioner:
    cfg = deps.cfg
    provider_cfg = cfg.captioner.openai
    backend = ChatBackend("openai", provider_cfg, api_key(provider_cfg, "openai"),
                          max_tokens_param="max_completion_tokens")
    return LLMCaptioner("openai", backend, provider_cfg, cfg)
