"""A fake OpenAI Chat Completions server on loopback, for tests, benchmarks and plugin authors.

It is a real HTTP server (Starlette on :class:`~relaybot.core.testing.server.LoopbackServer`),
so the code under test runs its real HTTP client, SSE parser, timeouts and cancellation::

    async with FakeOpenAIServer(api_key="sk-test") as fake:
        fake.add_reply("Hello there!", tokens_per_second=50)
        fake.add_error(429, "Slow down", retry_after=2)
        provider = OpenAIProvider("openai", OpenAIConfig(base_url=fake.base_url, api_key="sk-test"))
        ...
        assert fake.requests[0].json["stream"] is True

Scripted responses are served in order (one per ``POST /v1/chat/completions``); when none are
queued, :attr:`FakeOpenAIServer.default` answers (``"You said: …"``). Streamed replies look like
OpenAI's: ``chat.completion.chunk`` objects with ``id``/``created``/``model``, a first chunk with
the role, one chunk per piece of text, a chunk with ``finish_reason``, a usage chunk with
``choices: []`` when the request set ``stream_options.include_usage``, then ``data: [DONE]``.

``POST /v1/images/generations`` answers like the images API: a real (small) PNG as ``b64_json``,
with the options checked per model as the real API checks them (GPT image models take no
``response_format``; ``dall-e-3`` only ``n=1`` and its three sizes). Scripted replies are shared
with chat completions (one queue, served in arrival order), so ``add_error`` applies to image
requests too; :meth:`FakeOpenAIServer.add_image` queues a specific image.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relaybot.core.testing._fake_base import FakeRequest, FakeStreamingServer, ScriptedReply, split_text

__all__ = ["FakeOpenAIServer", "FakeReply", "FakeRequest"]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(slots=True)
class FakeReply(ScriptedReply):
    """One scripted response (build it with the ``add_*`` methods of the server)."""

    finish_reason: str = "stop"
    refusal: bool = False
    #: for image requests: the PNG to return (``None``: one drawn from the prompt)
    image: bytes | None = None
    #: answer without any usage (like servers that ignore ``stream_options.include_usage``)
    no_usage: bool = False


def _last_user_text(request_json: dict[str, Any]) -> str:
    for message in reversed(request_json.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def default_responder(request_json: dict[str, Any]) -> str:
    """The default answer: ``"You said: <last user text>"``."""
    return f"You said: {_last_user_text(request_json)}"


def estimate_usage(request_json: dict[str, Any], text: str) -> tuple[int, int]:
    """A rough ``(prompt, completion)`` token estimate (~4 characters a token)."""
    prompt = sum(
        4 + len(_content_text(m.get("content"))) // 4
        for m in request_json.get("messages") or []
        if isinstance(m, dict)
    )
    return prompt, math.ceil(len(text) / 4)


class FakeOpenAIServer(FakeStreamingServer[FakeReply]):
    """Serves ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

    Attributes a test reads: :attr:`requests` (every request, in order), :attr:`disconnects`
    (streams the client closed before the server finished them). With ``api_key`` set, requests
    without ``Authorization: Bearer <api_key>`` get OpenAI's 401 body.
    """

    def __init__(self, *, api_key: str | None = None, model: str = "gpt-4o-mini") -> None:
        self._files: dict[str, bytes] = {}  # images served by URL (dall-e response_format="url")
        super().__init__(api_key=api_key, model=model, reply_type=FakeReply)
        #: answers requests when no scripted reply is queued: ``request_json -> text``
        self.default = default_responder

    def _routes(self) -> list[Any]:
        from starlette.routing import Route

        return [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/images/generations", self._images, methods=["POST"]),
            Route("/v1/fake-files/{name}", self._file, methods=["GET"]),
        ]

    def last_user_text(self, body: dict[str, Any]) -> str:
        """The text of the last ``user`` message of a request body."""
        return _last_user_text(body)

    def _default_reply(self, text: str) -> FakeReply:
        text, chunks = split_text(text, 4)
        return FakeReply(text=text, chunks=chunks, tokens_per_second=self.default_tokens_per_second)

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url`` (``url + "/v1"``)."""
        return self.url + "/v1"

    # ── scripting ───────────────────────────────────────────────────────────────────────────

    def add_reply(
        self,
        text: str = "",
        *,
        first_token_delay: float = 0.0,
        tokens_per_second: float | None = None,
        chunk_size_chars: int | list[str] = 4,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "stop",
        drop_after_chars: int | None = None,
        status: int = 200,
        error_body: Any = None,
        headers: dict[str, str] | None = None,
        refusal: bool = False,
        no_usage: bool = False,
    ) -> FakeReply:
        """Queue one reply.

        ``chunk_size_chars`` is the characters per chunk, or the exact list of chunks (which
        must join to ``text`` when ``text`` is given). ``tokens_per_second`` paces the chunks
        (``None``: as fast as possible) after ``first_token_delay``. ``usage`` is reported as is
        (``None``: a rough estimate). ``drop_after_chars`` ends the body after that many
        characters, with no ``finish_reason`` and no ``[DONE]``. ``refusal`` sends the text in
        ``delta.refusal``. ``no_usage`` leaves the usage out entirely (a server that reports
        none). A ``status`` other than 200 answers with ``error_body`` (JSON for a
        dict, else as is) and ``headers`` instead of a stream.
        """
        text, chunks = split_text(text, chunk_size_chars)
        if status != 200 and error_body is None:
            error_body = _error_body(status, f"fake error (HTTP {status})", None)
        reply = FakeReply(
            text=text,
            chunks=chunks,
            first_token_delay=first_token_delay,
            tokens_per_second=tokens_per_second,
            usage=usage,
            finish_reason=finish_reason,
            drop_after_chars=drop_after_chars,
            status=status,
            error_body=error_body,
            headers=dict(headers or {}),
            refusal=refusal,
            no_usage=no_usage,
        )
        return self._enqueue(reply)

    def add_error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> FakeReply:
        """Queue an HTTP error with an OpenAI-shaped body (``{"error": {"message", …}}``).

        ``retry_after`` sets the ``retry-after`` header (seconds); for ``retry-after-ms`` use
        :meth:`add_reply` with ``headers``.
        """
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return self.add_reply(status=status, error_body=_error_body(status, message, code), headers=headers)

    def add_image(
        self, png: bytes | None = None, *, revised_prompt: str = "", delay: float = 0.0
    ) -> FakeReply:
        """Queue the answer to the next request: for an image request, ``png`` (default: one
        drawn from the prompt) after ``delay`` seconds, with ``revised_prompt`` (dall-e-3
        rewrites prompts)."""
        return self._enqueue(FakeReply(text=revised_prompt, image=png, first_token_delay=delay))

    # ── HTTP handlers ───────────────────────────────────────────────────────────────────────

    async def _models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "relaybot"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _images(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        reply = self._queue.popleft() if self._queue else FakeReply()
        if reply.status != 200:
            if isinstance(reply.error_body, dict | list):
                return JSONResponse(reply.error_body, reply.status, headers=reply.headers)
            return JSONResponse(_error_body(reply.status, "fake error", None), reply.status)
        problem = _image_request_problem(body)
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)  # generating takes a while
        if problem is not None:
            status, message, code = problem
            return JSONResponse(_error_body(status, message, code), status)
        model = str(body.get("model") or "dall-e-2")
        size = str(body.get("size") or "1024x1024")
        png = reply.image or _draw_png(str(body["prompt"]), size)
        items: list[dict[str, Any]] = []
        for _ in range(int(body.get("n") or 1)):
            if body.get("response_format", "url" if model.startswith("dall-e") else "b64_json") == "url":
                name = uuid.uuid4().hex + ".png"
                self._files[name] = png
                item: dict[str, Any] = {"url": f"{self.base_url}/fake-files/{name}"}
            else:
                item = {"b64_json": base64.b64encode(png).decode("ascii")}
            if model == "dall-e-3":
                item["revised_prompt"] = reply.text or str(body["prompt"])
            items.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if model.startswith("gpt-image"):
            prompt_tokens = math.ceil(len(str(body["prompt"])) / 4)
            answer["usage"] = {"input_tokens": prompt_tokens, "output_tokens": 1056,
                               "total_tokens": prompt_tokens + 1056}  # fmt: skip
        return JSONResponse(answer, headers=reply.headers)

    async def _file(self, request: Any) -> Any:
        from starlette.responses import Response

        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(b"not found", 404)
        return Response(data, media_type="image/png")

    async def _admit(self, request: Any) -> tuple[dict[str, Any], Any]:
        """Record ``request``; return its JSON body and, if it is refused, the error response."""
        from starlette.responses import JSONResponse

        record, body = await self._record(request)
        if body is None:
            return {}, JSONResponse(_error_body(400, "We could not parse the JSON body.", None), 400)
        if self.api_key is not None:
            denied = self._check_key(record.headers.get("authorization", ""))
            if denied is not None:
                return body, JSONResponse(denied, 401)
        return body, None

    async def _chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        body, refused = await self._admit(request)
        if refused is not None:
            return refused
        reply = self._next_reply(body)
        if reply.raw is not None:
            return self._raw_response(reply)
        if reply.status != 200:
            return self._error_response(reply)
        if not body.get("stream"):
            return JSONResponse(self._completion(reply, body), headers=reply.headers)
        return self._streaming(self._frames(reply, body), 200, reply.headers, "text/event-stream")

    def _check_key(self, authorization: str) -> dict[str, Any] | None:
        if authorization == f"Bearer {self.api_key}":
            return None
        given = authorization.removeprefix("Bearer ").strip()
        if not given:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _error_body(401, message, None)
        # Like OpenAI: the key is echoed only masked.
        masked = given[:3] + "*" * 4 + given[-4:] if len(given) > 8 else "****"
        return _error_body(401, f"Incorrect API key provided: {masked}.", "invalid_api_key")

    async def _frames(self, reply: FakeReply, request_json: dict[str, Any]) -> AsyncIterator[bytes]:
        chunk_id = "chatcmpl-" + uuid.uuid4().hex[:29]
        created = int(time.time())
        model = str(request_json.get("model") or self.model)

        def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_relaybot",
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        key = "refusal" if reply.refusal else "content"
        first = (
            {"role": "assistant", "content": None, "refusal": ""}
            if reply.refusal
            else {"role": "assistant", "content": "", "refusal": None}
        )
        yield frame(choice(first))
        cut = reply.drop_after_chars
        async for piece, _last in self._paced(reply, cut):
            yield frame(choice({key: piece}))
        if cut is not None and reply.chunks and sum(len(c) for c in reply.chunks) >= cut:
            return  # the text was cut: the body ends here, with no finish_reason and no [DONE]
        yield frame(choice({}, reply.finish_reason))
        if (request_json.get("stream_options") or {}).get("include_usage") and not reply.no_usage:
            prompt, completion = reply.usage or estimate_usage(request_json, reply.text)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield frame([], usage=usage)
        yield b"data: [DONE]\n\n"

    def _completion(self, reply: FakeReply, request_json: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = reply.usage or estimate_usage(request_json, reply.text)
        message = {
            "role": "assistant",
            "content": None if reply.refusal else reply.text,
            "refusal": reply.text if reply.refusal else None,
        }
        answer: dict[str, Any] = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:29],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request_json.get("model") or self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        if reply.no_usage:
            del answer["usage"]
        return answer


#: per model family: allowed sizes, qualities, max n, whether response_format is accepted
_IMAGE_MODELS: dict[str, tuple[frozenset[str], frozenset[str], int, bool]] = {
    "gpt-image": (frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
                  frozenset({"low", "medium", "high", "auto"}), 10, False),
    "dall-e-3": (frozenset({"1024x1024", "1792x1024", "1024x1792"}), frozenset({"standard", "hd"}), 1, True),
    "dall-e-2": (frozenset({"256x256", "512x512", "1024x1024"}), frozenset({"standard"}), 10, True),
}  # fmt: skip


def _image_request_problem(body: dict[str, Any]) -> tuple[int, str, str | None] | None:
    """``(status, message, code)`` the real images API would answer to ``body``, or None if valid."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return 400, "Missing required parameter: 'prompt'.", "missing_required_parameter"
    model = str(body.get("model") or "dall-e-2")
    family = next((f for f in _IMAGE_MODELS if model.startswith(f)), None)
    if family is None:
        return 404, f"The model '{model}' does not exist.", "model_not_found"
    sizes, qualities, max_n, takes_format = _IMAGE_MODELS[family]
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= max_n:
        if max_n == 1:
            return 400, "You must provide n=1 for this model.", None
        return 400, f"Invalid 'n': must be between 1 and {max_n}.", "invalid_value"
    size = body.get("size", "1024x1024")
    if size not in sizes:
        allowed = ", ".join(f"'{s}'" for s in sorted(sizes))
        return 400, f"Invalid value: '{size}'. Supported values are: {allowed}.", "invalid_value"
    quality = body.get("quality", next(iter(sorted(qualities))))
    if quality not in qualities:
        return 400, f"Invalid value for 'quality': '{quality}'.", "invalid_value"
    if "response_format" in body:
        if not takes_format:
            return 400, "Unknown parameter: 'response_format'.", "unknown_parameter"
        if body["response_format"] not in ("url", "b64_json"):
            return 400, "Invalid value for 'response_format'.", "invalid_value"
    return None


def _draw_png(prompt: str, size: str) -> bytes:
    """A small real PNG (1/16 of ``size``) in a colour derived from the prompt."""
    from PIL import Image  # pillow is a core dependency

    width, height = (int(v) for v in size.split("x")) if "x" in size else (1024, 1024)
    colour = tuple(hashlib.sha256(prompt.encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (max(1, width // 16), max(1, height // 16)), colour).save(buf, "PNG")
    return buf.getvalue()


def _error_body(status: int, message: str, code: str | None) -> dict[str, Any]:
    etype, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code or default_code}}
