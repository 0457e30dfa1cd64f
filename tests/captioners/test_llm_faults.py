"""Captioning faults found against the provider fakes: each is classified the way the pipeline needs
(install-wide faults pause, with a message that says what to fix), and answers the models really give
are used instead of failing."""

from __future__ import annotations

import json
import socket

import pytest

from aiposter.captioners import build
from aiposter.config import Config
from aiposter.core.errors import CaptionError

from .conftest import make_config
from .fakes import (
    EXPIRED_KEY,
    FakeAnthropic,
    FakeGemini,
    FakeOpenAI,
    anthropic_credit_too_low,
    anthropic_message,
    gemini_response,
    openai_completion,
)
from .test_llm_providers import ANSWER, caption_request

FAKES = {"openai": FakeOpenAI, "gemini": FakeGemini, "anthropic": FakeAnthropic}
ANSWERS = {"openai": openai_completion, "gemini": gemini_response, "anthropic": anthropic_message}


def caption_error(provider: str, base_url: str, photo, **overrides) -> CaptionError:
    with pytest.raises(CaptionError) as info:
        build(provider, make_config(provider, base_url, **overrides)).caption(caption_request(photo))
    return info.value


def test_an_expired_gemini_key_is_an_auth_fault_read_from_the_error_details(photo):
    """Google says "API key expired" with ErrorInfo.reason API_KEY_INVALID in the details of a 400."""
    with FakeGemini() as fake:
        fake.reply(gemini_response(json.dumps(ANSWER)))
        error = caption_error("gemini", fake.base_url, photo, api_key=EXPIRED_KEY)
    assert (error.code, error.permanent) == ("auth", True)
    assert "API key expired" in str(error) and "[captioner.gemini] api_key" in str(error)


def test_anthropic_credit_balance_too_low_is_a_quota_fault(photo):
    with FakeAnthropic() as fake:
        fake.reply(anthropic_credit_too_low())
        error = caption_error("anthropic", fake.base_url, photo)
    assert (error.code, error.permanent) == ("quota", True)
    assert "credit balance is too low" in str(error)


@pytest.mark.parametrize("provider", ["openai", "gemini", "anthropic"])
def test_a_wrong_base_url_is_a_config_fault_naming_the_url_and_model(provider, photo):
    with FAKES[provider]() as fake:
        fake.reply(ANSWERS[provider](json.dumps(ANSWER)))
        wrong = fake.origin + "/wrong" + ("/v1" if provider == "openai" else "")
        error = caption_error(provider, wrong, photo)
    assert (error.code, error.permanent) == ("config", True)
    assert "404" in str(error) and wrong in str(error) and "'m-test'" in str(error)
    assert f"[captioner.{provider}] base_url" in str(error)


@pytest.mark.parametrize("provider", ["openai", "gemini", "anthropic"])
def test_an_unknown_model_is_a_config_fault_naming_the_model(provider, photo):
    with FAKES[provider]() as fake:
        fake.models = {"m-test"}
        fake.reply(ANSWERS[provider](json.dumps(ANSWER)))
        error = caption_error(provider, fake.base_url, photo, model="m-tset")
    assert (error.code, error.permanent) == ("config", True)
    assert "m-tset" in str(error) and f"[captioner.{provider}]" in str(error)


@pytest.mark.parametrize(("provider", "default"), [("openai", "gpt-4o-mini"), ("gemini", "gemini-2.5-flash"),
                                                   ("anthropic", "claude-sonnet-4-6")])
def test_a_section_without_model_uses_the_providers_default(provider, default, photo):
    with FAKES[provider]() as fake:
        fake.models = {default}
        fake.reply(ANSWERS[provider](json.dumps(ANSWER)))
        cfg = Config.model_validate({"captioner": {provider: {
            "api_key": "sk-test-key", "base_url": fake.base_url, "max_retries": 0}}})
        assert cfg.captioner.openai_compatible.model == "llava"  # untouched sections keep theirs too
        result = build(provider, cfg).caption(caption_request(photo))
    assert result.usage["model"] == default


def test_an_explicitly_empty_model_is_a_config_error():
    with pytest.raises(ValueError, match="model"):
        Config.model_validate({"captioner": {"openai": {"model": ""}}})


def test_captions_missing_a_platform_fall_back_to_the_top_level_caption(photo):
    answer = {"caption": "Golden hour on the dunes.", "captions": {"instagram": "Dunes at dusk, calm sea."},
              "hashtags": [], "alt_text": "Sand dunes at sunset."}
    with FakeOpenAI() as fake:
        fake.reply(openai_completion(json.dumps(answer)))
        result = build("openai", make_config("openai", fake.base_url)).caption(caption_request(photo))
        assert len(fake.requests) == 1
    assert result.captions["instagram"].startswith("Dunes at dusk, calm sea.")
    assert result.captions["threads"].startswith("Golden hour on the dunes.")


def test_an_answer_without_alt_text_is_asked_again(photo):
    without = {**ANSWER, "alt_text": ""}
    with FakeOpenAI() as fake:
        fake.reply(openai_completion(json.dumps(without)), openai_completion(json.dumps(ANSWER)))
        result = build("openai", make_config("openai", fake.base_url)).caption(caption_request(photo))
        assert len(fake.requests) == 2
    assert result.alt_text == ANSWER["alt_text"]


def test_alt_text_is_derived_when_the_model_never_gives_one(photo):
    without = {"captions": {"instagram": "Golden hour on the dunes. #beach More text.", "threads": "Dunes."},
               "hashtags": []}
    with FakeOpenAI() as fake:
        fake.reply(openai_completion(json.dumps(without)))
        result = build("openai", make_config("openai", fake.base_url)).caption(caption_request(photo))
        assert len(fake.requests) == 2
    assert result.alt_text == "Golden hour on the dunes."


@pytest.mark.parametrize("provider", ["openai", "gemini", "anthropic"])
def test_cannot_connect_names_the_url(provider, photo):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}" + ("/v1" if provider == "openai" else "")
    error = caption_error(provider, base_url, photo)
    assert (error.code, error.permanent) == ("connection", False)
    assert f"cannot connect to http://127.0.0.1:{port}" in str(error)


@pytest.mark.parametrize(("provider", "cut"), [
    ("openai", lambda text: openai_completion(text, finish_reason="length")),
    ("gemini", lambda text: gemini_response(text, finish_reason="MAX_TOKENS")),
    ("anthropic", lambda text: anthropic_message(text, stop_reason="max_tokens")),
])
def test_a_truncated_answer_hints_at_max_output_tokens(provider, cut, photo):
    with FAKES[provider]() as fake:
        fake.reply(cut('{"captions": {"instagram": "Golden hour on the du'))
        error = caption_error(provider, fake.base_url, photo, max_output_tokens=64)
    assert error.code == "malformed_output"
    assert "not valid JSON" in str(error)
    assert f"max_output_tokens = 64: raise [captioner.{provider}] max_output_tokens" in str(error)


def test_an_unterminated_answer_hints_at_the_limit_even_without_a_stop_reason(photo):
    with FakeOpenAI() as fake:
        fake.reply(openai_completion('{"captions": {"instagram": "Golden hour'))
        error = caption_error("openai", fake.base_url, photo)
    assert "looks cut off" in str(error) and "max_output_tokens" in str(error)


def test_an_anthropic_refusal_without_stop_details_gives_the_best_reason(photo):
    with FakeAnthropic() as fake:
        fake.reply(anthropic_message("I can't describe this photo because it shows a person's ID card.",
                                     stop_reason="refusal"))
        error = caption_error("anthropic", fake.base_url, photo)
        assert (error.code, error.permanent) == ("refused", True)
        assert "it shows a person's ID card" in str(error)
        fake.reply(anthropic_message("", stop_reason="refusal"))
        bare = caption_error("anthropic", fake.base_url, photo)
    assert "no reason given" not in str(bare)
    assert 'stop_reason "refusal"' in str(bare) and "no stop_details" in str(bare)


def test_config_check_shows_the_default_model_of_a_section_given_without_one(tmp_path):
    from typer.testing import CliRunner

    from aiposter.cli import app

    toml = tmp_path / "config.toml"
    toml.write_text('[captioner]\ndefault = "gemini"\n[captioner.gemini]\napi_key = "k"\ntimeout = 30.0\n'
                    f'[daemon]\ndata_dir = "{tmp_path}/data"\n')
    result = CliRunner().invoke(app, ["--config", str(toml), "config", "check", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["captioner"]["gemini"]
    assert shown["model"] == "gemini-2.5-flash" and shown["timeout"] == 30.0 and shown["api_key"] == "********"
