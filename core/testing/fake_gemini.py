"""A fake Gemini API server on loopback, for tests, benchmarks and plugin authors.

It is a real HTTP server, so the code under test runs its real HTTP client, SSE parser, timeouts
and cancellation::

    async with FakeGeminiServer(api_key="AIza-test") as fake:
        fake.add_reply("Hello there!", usage=(9, 3))
        fake.add_reply("Partial", finish_reason="SAFETY")
        fake.add_error(429, "Quota exceeded", retry_delay=37)
        provider = GeminiProvider("gemini", GeminiConfig(base_url=fake.base_url, api_key=…))
        ...
        assert fake.requests[0].headers["x-goog-api-key"] == "AIza-test"

Scripted replies are served in order (one per ``POST /v1beta/models/{model}:streamGenerateContent``
or ``:generateContent``); when none are queued, :attr:`FakeGeminiServer.default` answers
(``"You said: …"``). With ``alt=sse`` each frame is ``data: <GenerateContentResponse>`` followed
by a blank line (CRLF, as Google sends it); the last text frame carries ``finishReason`` and the
full ``usageMetadata``; there is no end marker. Without ``alt=sse`` the same responses come as
one JSON array. With :attr:`strict` (the default) the fake rejects contents the real API
rejects (no contents, a role other than ``user``/``model``, empty parts).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relaybot.core.testing._fake_base import FakeStreamingServer, RecordedRequest, ScriptedReply, split_text

__all__ = ["FakeGeminiReply", "FakeGeminiServer"]

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_RATINGS = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)


@dataclass(slots=True)
class FakeGeminiReply(ScriptedReply):
    """A scripted Gemini reply (see :meth:`FakeGeminiServer.add_reply`)."""

    block_reason: str | None = None
    safety_category: str = "HARM_CATEGORY_DANGEROUS_CONTENT"
    error_after_chars: int | None = None
    error_status: int = 503
    error_message: str = "The model is overloaded. Please try again later."
    thoughts: str = ""


def _error_body(
    status: int,
    message: str,
    rpc_status: str | None = None,
    *,
    retry_delay: float | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A ``google.rpc.Status``-shaped error body, as the Gemini API sends it."""
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    if retry_delay is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": (
                            "generativelanguage.googleapis.com/generate_content_free_tier_requests"
                        ),
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaValue": "10",
                    }
                ],
            }
        )
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay:g}s"}
        )
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": rpc_status or _STATUSES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _ratings(blocked: str | None) -> list[dict[str, Any]]:
    ratings: list[dict[str, Any]] = [{"category": c, "probability": "NEGLIGIBLE"} for c in _RATINGS]
    for rating in ratings:
        if rating["category"] == blocked:
            rating.update(probability="HIGH", blocked=True)
    return ratings


class FakeGeminiServer(FakeStreamingServer[FakeGeminiReply]):
    """Serves ``POST /{version}/models/{model}:streamGenerateContent`` and ``:generateContent``.

    With ``api_key`` set, requests need it in ``x-goog-api-key`` (or ``?key=``, which the real
    API also accepts; tests can check :attr:`requests` that it was not used): a missing key gets
    403 ``PERMISSION_DENIED``, a wrong one 400 ``INVALID_ARGUMENT`` / ``API_KEY_INVALID``, like
    the real API. Each record's ``query`` holds the query parameters.
    """

    def __init__(self, *, api_key: str | None = None, model: str = "gemini-2.5-flash") -> None:
        super().__init__(api_key=api_key, model=model, reply_type=FakeGeminiReply)
        #: reject contents the real API would reject (see the module docstring)
        self.strict = True

    @property
    def base_url(self) -> str:
        """What a Gemini client takes as ``base_url`` (the root, without ``/v1beta``)."""
        return self.url

    def _routes(self) -> list[Any]:
        from starlette.routing import Route

        return [Route("/{version}/models/{target:path}", self._generate, methods=["POST"])]

    def last_user_text(self, body: dict[str, Any]) -> str:
        """The text of the last ``user`` turn of a request body."""
        for content in reversed(body.get("contents") or []):
            if isinstance(content, dict) and content.get("role", "user") == "user":
                parts = content.get("parts") or []
                return "".join(p.get("text", "") for p in parts if isinstance(p, dict))
        return ""

    def _default_reply(self, text: str) -> FakeGeminiReply:
        text, chunks = split_text(text, 4)
        return FakeGeminiReply(text=text, chunks=chunks, finish_reason="STOP")

    # ── scripting ───────────────────────────────────────────────────────────────────────────

    def add_reply(
        self,
        text: str = "",
        *,
        first_token_delay: float = 0.0,
        tokens_per_second: float | None = None,
        chunk_size_chars: int | list[str] = 4,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "STOP",
        block_reason: str | None = None,
        safety_category: str = "HARM_CATEGORY_DANGEROUS_CONTENT",
        drop_after_chars: int | None = None,
        error_after_chars: int | None = None,
        error_status: int = 503,
        error_message: str = "The model is overloaded. Please try again later.",
        thoughts: str = "",
        status: int = 200,
        error_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> FakeGeminiReply:
        """Queue one reply.

        ``chunk_size_chars`` is the characters per frame, or the exact list of frame texts.
        ``tokens_per_second`` paces the frames (``None``: as fast as possible) after
        ``first_token_delay``. ``usage`` is ``(prompt, candidates)`` tokens (``None``: a rough
        estimate). ``finish_reason`` goes on the last frame; for ``SAFETY`` the candidate's
        ``safetyRatings`` mark ``safety_category`` as blocked. ``block_reason`` answers with a
        single ``promptFeedback.blockReason`` frame and no candidates (the prompt was blocked).
        ``drop_after_chars`` ends the body after that many characters with no ``finishReason``;
        ``error_after_chars`` sends an error frame (``error_status``) there instead.
        ``thoughts`` adds a ``thought: true`` part (a thinking summary) before the text. A
        ``status`` other than 200 answers with ``error_body`` and ``headers`` instead.
        """
        text, chunks = split_text(text, chunk_size_chars)
        if status != 200 and error_body is None:
            error_body = _error_body(status, f"fake error (HTTP {status})")
        reply = FakeGeminiReply(
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
            block_reason=block_reason,
            safety_category=safety_category,
            error_after_chars=error_after_chars,
            error_status=error_status,
            error_message=error_message,
            thoughts=thoughts,
        )
        self._enqueue(reply)
        return reply

    def add_error(
        self,
        status: int,
        message: str,
        *,
        retry_delay: float | None = None,
        status_code: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> FakeGeminiReply:
        """Queue an HTTP error with a Gemini-shaped body (``{"error": {"code", "message", "status"}}``).

        ``status_code`` is the RPC status (default from the HTTP status: 429
        ``RESOURCE_EXHAUSTED`` …); ``retry_delay`` adds ``RetryInfo.retryDelay`` (``"37s"``) to
        ``details`` as the real API does on 429; ``reason`` adds an ``ErrorInfo`` (e.g.
        ``API_KEY_INVALID``); ``retry_after`` sets a ``retry-after`` header (Google does not).
        """
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        body = _error_body(status, message, status_code, retry_delay=retry_delay, reason=reason)
        return self.add_reply(status=status, error_body=body, headers=headers)

    # ── HTTP handler ────────────────────────────────────────────────────────────────────────

    async def _generate(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        record, body = await self._record(request)
        model, _, method = str(request.path_params["target"]).partition(":")
        if method not in ("streamGenerateContent", "generateContent"):
            return JSONResponse(_error_body(404, f"Method {method!r} not found."), 404)
        if body is None:
            return JSONResponse(_error_body(400, "Invalid JSON payload received."), 400)
        if self.api_key is not None:
            denied = self._check_key(record)
            if denied is not None:
                return JSONResponse(denied, denied["error"]["code"])
        if self.strict:
            problem = self._validate(body)
            if problem is not None:
                return JSONResponse(_error_body(400, problem), 400)
        reply = self._next_reply(body)
        if reply.raw is not None:
            return self._raw_response(reply)
        if reply.status != 200:
            return self._error_response(reply)
        assert isinstance(reply, FakeGeminiReply)
        model = model or self.model
        if method == "generateContent":
            return JSONResponse(self._whole(reply, body, model), headers=reply.headers)
        if record.query.get("alt") != "sse":
            frames = [frame async for frame in self._frames(reply, body, model)]
            return JSONResponse(frames, headers=reply.headers)
        return self._streaming(self._sse(reply, body, model), 200, reply.headers, "text/event-stream")

    def _check_key(self, record: RecordedRequest) -> dict[str, Any] | None:
        given = record.headers.get("x-goog-api-key") or record.query.get("key") or ""
        if given == self.api_key:
            return None
        if not given:
            return _error_body(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        return _error_body(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")

    def _validate(self, body: dict[str, Any]) -> str | None:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified\n"
        for i, content in enumerate(contents):
            if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
                return "Please use a valid role: user, model."
            parts = content.get("parts")
            if not parts:
                return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            if any(isinstance(p, dict) and p.get("text") == "" for p in parts):
                return (
                    "Unable to submit request because it has an empty text parameter. "
                    "Add a value to the parameter and try again."
                )
        return None

    def _usage(self, reply: FakeGeminiReply, body: dict[str, Any]) -> tuple[int, int]:
        if reply.usage is not None:
            return reply.usage
        prompt = sum(
            4 + sum(len(p.get("text", "")) for p in c.get("parts") or [] if isinstance(p, dict)) // 4
            for c in body.get("contents") or []
            if isinstance(c, dict)
        )
        return prompt, math.ceil(len(reply.text) / 4)

    async def _sse(self, reply: FakeGeminiReply, body: dict[str, Any], model: str) -> AsyncIterator[bytes]:
        async for frame in self._frames(reply, body, model):
            yield b"data: " + json.dumps(frame, ensure_ascii=False).encode() + b"\r\n\r\n"

    async def _frames(
        self, reply: FakeGeminiReply, body: dict[str, Any], model: str
    ) -> AsyncIterator[dict[str, Any]]:
        prompt, completion = self._usage(reply, body)
        response_id = uuid.uuid4().hex[:22]

        def frame(candidate: dict[str, Any] | None, usage: dict[str, Any], **extra: Any) -> dict[str, Any]:
            out: dict[str, Any] = {"candidates": [candidate]} if candidate is not None else {}
            return {**out, **extra, "usageMetadata": usage, "modelVersion": model, "responseId": response_id}

        running = {"promptTokenCount": prompt, "totalTokenCount": prompt}
        if reply.block_reason is not None:
            feedback = {"blockReason": reply.block_reason, "safetyRatings": _ratings(reply.safety_category)}
            yield frame(None, running, promptFeedback=feedback)
            return
        if reply.thoughts:
            thought = {"content": {"parts": [{"text": reply.thoughts, "thought": True}], "role": "model"}}
            yield frame({**thought, "index": 0}, running)
        cut = reply.error_after_chars if reply.error_after_chars is not None else reply.drop_after_chars
        ends = cut is None  # a cut body has no final frame
        # A filtered answer's last frame has no content, only the verdict.
        filtered = reply.finish_reason in ("SAFETY", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST")
        final: dict[str, Any] = {"finishReason": reply.finish_reason, "index": 0}
        async for piece, last in self._paced(reply, cut):
            content = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
            if last and ends and not filtered:
                final.update(content)  # the last text frame carries finishReason, as Gemini's does
            else:
                yield frame(content, running)
        if reply.error_after_chars is not None:
            yield _error_body(reply.error_status, reply.error_message)
        if not ends:
            return  # the body ends here: no finishReason
        if reply.finish_reason == "SAFETY":
            final["safetyRatings"] = _ratings(reply.safety_category)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
        yield frame(final, usage)

    def _whole(self, reply: FakeGeminiReply, body: dict[str, Any], model: str) -> dict[str, Any]:
        prompt, completion = self._usage(reply, body)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": completion,
            "totalTokenCount": prompt + completion,
        }
        if reply.block_reason is not None:
            feedback = {"blockReason": reply.block_reason, "safetyRatings": _ratings(reply.safety_category)}
            return {"promptFeedback": feedback, "usageMetadata": usage, "modelVersion": model}
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": reply.text}], "role": "model"},
            "finishReason": reply.finish_reason,
            "index": 0,
        }
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}
