"""The ``gemini`` captioner: ``generateContent`` through the official ``google-genai`` SDK (never the
retired ``google-generativeai``), the image as inline bytes. ``base_url`` is the origin only (no version);
requests go to ``{base_url}/v1beta/models/{model}:generateContent``.

Structured output uses ``response_json_schema``. On thinking models (gemini-2.5-*), thinking tokens count
against ``max_output_tokens`` and are billed as output, so both are included in the reported usage.
"""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors, types

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

# Pinned rather than the SDK's default ("v1" in google-genai 3.x): v1beta is where Gemini's JSON-schema
# structured output is documented, and a pin keeps an SDK upgrade from changing the endpoint.
API_VERSION = "v1beta"

# The SDK sends through httpx or httpx2, whichever it picks; catch both.
_TRANSPORT = (httpx.TransportError, httpx2.TransportError)  # timeouts included

# Finish reasons that mean the answer was withheld for policy reasons rather than cut short.
_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "LANGUAGE"}


class GenerateContentBackend:
    provider = "gemini"

    def __init__(self, cfg: LLMProviderConfig, key: str):
        self.model = cfg.model
        self.cfg = cfg
        self.base_url = f"{(cfg.base_url or 'https://generativelanguage.googleapis.com').rstrip('/')}/{API_VERSION}"
        # retry_options=None disables the SDK's retries; attempts counts the first call too.
        retry = types.HttpRetryOptions(attempts=cfg.max_retries + 1) if cfg.max_retries else None
        self.client = genai.Client(api_key=key, http_options=types.HttpOptions(
            base_url=cfg.base_url or None, api_version=API_VERSION, timeout=int(cfg.timeout * 1000),
            retry_options=retry))

    def complete(self, prompt: Prompt, image: LLMImage) -> Reply:
        config: dict[str, Any] = {"system_instruction": prompt.system,
                                  "max_output_tokens": self.cfg.max_output_tokens}
        if self.cfg.temperature is not None:
            config["temperature"] = self.cfg.temperature
        if self.cfg.structured_output != "none":
            config["response_mime_type"] = "application/json"
        if self.cfg.structured_output == "json_schema":
            config["response_json_schema"] = prompt.schema
        contents = [types.Content(role="user", parts=[
            types.Part.from_bytes(data=image.data, mime_type=image.mime_type),
            types.Part.from_text(text=prompt.user_text),
        ])]
        try:
            response = self.client.models.generate_content(
                model=self.model, contents=contents, config=types.GenerateContentConfig(**config))
        except (errors.APIError, *_TRANSPORT) as exc:
            raise provider_error(self, exc, base_url=self.base_url, timeout=self.cfg.timeout) from None
        usage = response.usage_metadata
        input_tokens = usage.prompt_token_count if usage else None
        output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) \
            if usage else None
        feedback = response.prompt_feedback
        if feedback and feedback.block_reason:
            reason = feedback.block_reason_message or f"prompt blocked ({feedback.block_reason.value})"
            raise refused(self.provider, reason)
        if not response.candidates:
            return Reply("", input_tokens, output_tokens)
        candidate = response.candidates[0]
        reason = candidate.finish_reason.value if candidate.finish_reason else ""
        if reason in _BLOCKED:
            raise refused(self.provider, candidate.finish_message or f"answer blocked ({reason})")
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        return Reply(text, input_tokens, output_tokens, truncated=reason == "MAX_TOKENS")


def build(deps: AdapterDeps) -> LLMCaptioner:
    cfg = deps.cfg
    provider_cfg = cfg.captioner.gemini
    return LLMCaptioner("gemini", GenerateContentBackend(provider_cfg, api_key(provider_cfg, "gemini")),
                        provider_cfg, cfg)
