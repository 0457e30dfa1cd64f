"""Loopback fakes of the OpenAI, Gemini and Anthropic HTTP APIs, for driving the real SDKs in tests.

Each fake is a stdlib HTTP server on 127.0.0.1 (port chosen by the OS) that checks what the real API
checks (path, auth header, required fields), records every request, and answers from a script of
:class:`Reply` objects (the last one repeats). The reply builders produce each API's wire format, per
shared/platform-contracts.md section 6.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-key"
EXPIRED_KEY = "sk-expired-key"  # a key the provider knows but no longer accepts


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]   # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None          # dict/list: sent as JSON; str: sent as text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0        # seconds to wait before answering (timeouts)


class FakeServer:
    """The transport: start/stop, recording, scripted replies. Subclasses implement :meth:`check`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                request = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                   self.rfile.read(length))
                reply = fake._handle(request)
                time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json" if not isinstance(reply.body, str)
                                     else "text/plain")
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reply(self, *replies: Reply) -> None:
        self._script = list(replies)

    def _handle(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            problem = self.check(request)
            if problem is not None:
                return problem
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def check(self, request: Recorded) -> Reply | None:
        """A reply describing what is wrong with ``request`` (as the real API would), or None."""
        raise NotImplementedError

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- OpenAI chat completions


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions`` with ``Authorization: Bearer``; base_url is ``origin + "/v1"``."""

    api_key: str | None = API_KEY  # None: accept any key, as local servers do
    models: set[str] | None = None  # the models the server has; None: any

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def check(self, request: Recorded) -> Reply | None:
        if request.path != "/v1/chat/completions":
            return openai_error(404, f"Unknown request URL: POST {request.path}. Please check the URL for any "
                                "typos, or see the API reference for the list of supported endpoints.",
                                "invalid_request_error")
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return openai_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        body = request.json()
        if not body.get("model") or not isinstance(body.get("messages"), list):
            return openai_error(400, "you must provide a model parameter", "invalid_request_error")
        if self.models is not None and body["model"] not in self.models:
            return openai_error(404, f"The model `{body['model']}` does not exist or you do not have access "
                                "to it.", "invalid_request_error", "model_not_found")
        return None

    @staticmethod
    def system(request: Recorded) -> str:
        return next(m["content"] for m in request.json()["messages"] if m["role"] == "system")

    @staticmethod
    def user_text(request: Recorded) -> str:
        user = next(m for m in request.json()["messages"] if m["role"] == "user")
        return "".join(p["text"] for p in user["content"] if p["type"] == "text")

    @staticmethod
    def image(request: Recorded) -> bytes:
        user = next(m for m in request.json()["messages"] if m["role"] == "user")
        url = next(p["image_url"]["url"] for p in user["content"] if p["type"] == "image_url")
        prefix = "data:image/jpeg;base64,"
        assert url.startswith(prefix), url[:40]
        return base64.b64decode(url[len(prefix):], validate=True)


def openai_completion(content: str | None, *, refusal: str | None = None, finish_reason: str = "stop",
                      usage: tuple[int, int] = (812, 41)) -> Reply:
    return Reply(body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1730000000, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    })


def openai_error(status: int, message: str, type_: str, code: str | None = None, *,
                 headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    return Reply(status, {"error": {"message": message, "type": type_, "param": None, "code": code}},
                 headers or {}, delay)


# --------------------------------------------------------------------------- Gemini generateContent


class FakeGemini(FakeServer):
    """``POST /v1beta/models/{model}:generateContent`` with ``x-goog-api-key``; base_url is the origin."""

    base_url = FakeServer.origin
    models: set[str] | None = None  # the models the API has; None: any

    def check(self, request: Recorded) -> Reply | None:
        path = request.path.split("?")[0]
        if not (path.startswith("/v1beta/models/") and path.endswith(":generateContent")):
            # What Google's front end answers for an unknown path: an HTML page, not the JSON envelope.
            return Reply(404, "<!DOCTYPE html><html><title>Error 404 (Not Found)!!1</title><p>The requested "
                         f"URL <code>{path}</code> was not found on this server.</p></html>")
        key = request.headers.get("x-goog-api-key")
        if key == EXPIRED_KEY:
            return gemini_key_error("API key expired. Please renew the API key.")
        if key != API_KEY:
            return gemini_key_error("API key not valid. Please pass a valid API key.")
        if not request.json().get("contents"):
            return gemini_error(400, "INVALID_ARGUMENT", "contents is not specified")
        model = self.model(request)
        if self.models is not None and model not in self.models:
            return gemini_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is "
                                "not supported for generateContent. Call ListModels to see the list of "
                                "available models and their supported methods.")
        return None

    @staticmethod
    def model(request: Recorded) -> str:
        return request.path.split("?")[0].removeprefix("/v1beta/models/").removesuffix(":generateContent")

    @staticmethod
    def system(request: Recorded) -> str:
        body = request.json()
        instruction = body.get("systemInstruction") or body.get("system_instruction")
        return "".join(p["text"] for p in instruction["parts"])

    @staticmethod
    def _parts(request: Recorded) -> list[dict[str, Any]]:
        return [p for c in request.json()["contents"] for p in c["parts"]]

    @classmethod
    def user_text(cls, request: Recorded) -> str:
        return "".join(p["text"] for p in cls._parts(request) if "text" in p)

    @classmethod
    def image(cls, request: Recorded) -> bytes:
        inline = next(p.get("inlineData") or p.get("inline_data") for p in cls._parts(request)
                      if "inlineData" in p or "inline_data" in p)
        assert (inline.get("mimeType") or inline.get("mime_type")) == "image/jpeg"
        # Google's JSON mapping of bytes accepts both alphabets; the SDK sends the URL-safe one.
        return base64.b64decode(inline["data"].replace("-", "+").replace("_", "/"), validate=True)


def gemini_response(text: str, *, finish_reason: str = "STOP", usage: tuple[int, int] = (1290, 35)) -> Reply:
    return Reply(body={
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": finish_reason, "index": 0}],
        "usageMetadata": {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1],
                          "totalTokenCount": sum(usage)},
        "modelVersion": "gemini-test", "responseId": "r-1",
    })


def gemini_blocked(reason: str = "SAFETY") -> Reply:
    return Reply(body={"promptFeedback": {"blockReason": reason},
                       "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290}})


def gemini_error(code: int, status: str, message: str, *, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None, delay: float = 0.0) -> Reply:
    error = {"code": code, "message": message, "status": status, "details": details or []}
    return Reply(code, {"error": error}, headers or {}, delay)


def gemini_key_error(message: str) -> Reply:
    """Google's answer to a key it refuses: HTTP 400 whose structured details carry the reason."""
    return gemini_error(400, "INVALID_ARGUMENT", message, details=[
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}])


# --------------------------------------------------------------------------- Anthropic messages


class FakeAnthropic(FakeServer):
    """``POST /v1/messages`` with the key and ``anthropic-version``; base_url is the origin."""

    base_url = FakeServer.origin
    models: set[str] | None = None  # the models the API has; None: any

    def check(self, request: Recorded) -> Reply | None:
        if request.path != "/v1/messages":
            return anthropic_error(404, "not_found_error", f"Unknown path {request.path}")
        # The documented header is x-api-key; anthropic 2.x sends the same key as a Bearer token.
        if API_KEY not in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:]):
            return anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "invalid_request_error", "anthropic-version header is required")
        body = request.json()
        if not isinstance(body.get("max_tokens"), int) or not body.get("model"):
            return anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        if self.models is not None and body["model"] not in self.models:
            return anthropic_error(404, "not_found_error", f"model: {body['model']}")
        return None

    @staticmethod
    def system(request: Recorded) -> str:
        system = request.json()["system"]
        return system if isinstance(system, str) else "".join(b["text"] for b in system)

    @staticmethod
    def _content(request: Recorded) -> list[dict[str, Any]]:
        return [b for m in request.json()["messages"] for b in m["content"]]

    @classmethod
    def user_text(cls, request: Recorded) -> str:
        return "".join(b["text"] for b in cls._content(request) if b["type"] == "text")

    @classmethod
    def image(cls, request: Recorded) -> bytes:
        source = next(b["source"] for b in cls._content(request) if b["type"] == "image")
        assert source["type"] == "base64" and source["media_type"] == "image/jpeg"
        return base64.b64decode(source["data"], validate=True)


def anthropic_message(text: str, *, stop_reason: str = "end_turn", usage: tuple[int, int] = (1600, 40),
                      stop_details: dict | None = None) -> Reply:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
    if stop_details is not None:
        body["stop_details"] = stop_details
    return Reply(body=body)


def anthropic_error(status: int, type_: str, message: str, *, headers: dict[str, str] | None = None,
                    delay: float = 0.0) -> Reply:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_1"}
    return Reply(status, body, headers or {}, delay)


def anthropic_credit_too_low() -> Reply:
    """What Anthropic answers once the account's prepaid credit is used up (HTTP 400, not 402)."""
    return anthropic_error(400, "invalid_request_error", "Your credit balance is too low to access the Anthropic "
                           "API. Please go to Plans & Billing to upgrade or purchase credits.")
