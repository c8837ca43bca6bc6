"""A fake Anthropic Messages API server on loopback, for tests, benchmarks and plugin authors.

It is a real HTTP server, so the code under test runs its real HTTP client, SSE parser, timeouts
and cancellation::

    async with FakeAnthropicServer(api_key="sk-ant-test") as fake:
        fake.add_reply("Hello there!", tokens_per_second=50, usage=(11, 6))
        fake.add_reply("Hel", error_after_chars=3)          # then `event: error` overloaded
        fake.add_error(529, "Overloaded")
        provider = AnthropicProvider("claude", AnthropicConfig(base_url=fake.base_url, api_key=…))
        ...
        assert fake.requests[0].json["max_tokens"] == 1024

Scripted replies are served in order (one per ``POST /v1/messages``); when none are queued,
:attr:`FakeAnthropicServer.default` answers (``"You said: …"``). Streams look like the real
API's: ``message_start`` (input usage, ``output_tokens: 1``), ``content_block_start``, a ``ping``,
``content_block_delta`` events, ``content_block_stop``, ``message_delta`` (stop reason and the
*cumulative* output token count), ``message_stop``. With :attr:`strict` (the default) the fake
rejects requests the real API rejects: no ``anthropic-version``, no ``max_tokens``, roles that
do not alternate or do not start with ``user``, empty text blocks.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relaybot.core.testing._fake_base import FakeStreamingServer, RecordedRequest, ScriptedReply, split_text

__all__ = ["FakeAnthropicReply", "FakeAnthropicServer"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class FakeAnthropicReply(ScriptedReply):
    """A scripted Messages API reply (see :meth:`FakeAnthropicServer.add_reply`)."""

    stop_details: dict[str, Any] | None = None
    error_after_chars: int | None = None
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"
    thinking: str = ""
    ping_every: int | None = None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """An Anthropic-shaped error body: ``{"type": "error", "error": {"type", "message"}, …}``."""
    etype = error_type or _ERROR_TYPES.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": etype, "message": message},
        "request_id": "req_" + uuid.uuid4().hex[:24],
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class FakeAnthropicServer(FakeStreamingServer[FakeAnthropicReply]):
    """Serves ``POST /v1/messages`` (streaming and not).

    With ``api_key`` set, requests without a matching ``x-api-key`` header get Anthropic's 401
    body. :attr:`requests` holds every request (``.json``, ``.headers``), :attr:`disconnects`
    counts streams the client closed early.
    """

    def __init__(self, *, api_key: str | None = None, model: str = "claude-sonnet-4-5") -> None:
        super().__init__(api_key=api_key, model=model, reply_type=FakeAnthropicReply)
        #: reject requests the real API would reject (see the module docstring)
        self.strict = True

    @property
    def base_url(self) -> str:
        """What an Anthropic client takes as ``base_url`` (the root; the path is ``/v1/messages``)."""
        return self.url

    def _routes(self) -> list[Any]:
        from starlette.routing import Route

        return [Route("/v1/messages", self._messages, methods=["POST"])]

    def last_user_text(self, body: dict[str, Any]) -> str:
        """The text of the last ``user`` message of a request body."""
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    def _default_reply(self, text: str) -> FakeAnthropicReply:
        text, chunks = split_text(text, 4)
        return FakeAnthropicReply(text=text, chunks=chunks, finish_reason="end_turn")

    # ── scripting ───────────────────────────────────────────────────────────────────────────

    def add_reply(
        self,
        text: str = "",
        *,
        first_token_delay: float = 0.0,
        tokens_per_second: float | None = None,
        chunk_size_chars: int | list[str] = 4,
        usage: tuple[int, int] | None = None,
        stop_reason: str = "end_turn",
        stop_details: dict[str, Any] | None = None,
        drop_after_chars: int | None = None,
        error_after_chars: int | None = None,
        error_type: str = "overloaded_error",
        error_message: str = "Overloaded",
        thinking: str = "",
        ping_every: int | None = None,
        status: int = 200,
        error_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> FakeAnthropicReply:
        """Queue one reply.

        ``chunk_size_chars`` is the characters per ``text_delta``, or the exact list of deltas.
        ``tokens_per_second`` paces the deltas (``None``: as fast as possible) after
        ``first_token_delay``. ``usage`` is ``(input, output)`` tokens (``None``: a rough
        estimate). ``stop_reason``/``stop_details`` go into ``message_delta`` (e.g.
        ``"refusal"`` with ``{"type": "refusal", "explanation": …}``). ``drop_after_chars`` ends
        the body after that many characters with no ``message_delta``/``message_stop``;
        ``error_after_chars`` sends an ``event: error`` of ``error_type`` there instead.
        ``thinking`` adds a thinking block (``thinking_delta`` events) before the text;
        ``ping_every`` adds a ``ping`` after every that many deltas. A ``status`` other than
        200 answers with ``error_body`` and ``headers`` instead of a stream.
        """
        text, chunks = split_text(text, chunk_size_chars)
        if status != 200 and error_body is None:
            error_body = _error_body(status, f"fake error (HTTP {status})")
        reply = FakeAnthropicReply(
            text=text,
            chunks=chunks,
            first_token_delay=first_token_delay,
            tokens_per_second=tokens_per_second,
            usage=usage,
            finish_reason=stop_reason,
            drop_after_chars=drop_after_chars,
            status=status,
            error_body=error_body,
            headers=dict(headers or {}),
            stop_details=stop_details,
            error_after_chars=error_after_chars,
            error_type=error_type,
            error_message=error_message,
            thinking=thinking,
            ping_every=ping_every,
        )
        self._enqueue(reply)
        return reply

    def add_error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> FakeAnthropicReply:
        """Queue an HTTP error with an Anthropic-shaped body.

        ``error_type`` defaults from the status (400 ``invalid_request_error``, 529
        ``overloaded_error`` …); ``retry_after`` sets the ``retry-after`` header (seconds).
        """
        headers = {"request-id": "req_" + uuid.uuid4().hex[:24]}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        return self.add_reply(
            status=status, error_body=_error_body(status, message, error_type), headers=headers
        )

    # ── HTTP handler ────────────────────────────────────────────────────────────────────────

    async def _messages(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        record, body = await self._record(request)
        if body is None:
            return JSONResponse(_error_body(400, "There was an issue with the format of your request"), 400)
        if self.api_key is not None:
            denied = self._check_key(record)
            if denied is not None:
                return JSONResponse(denied, 401)
        if self.strict:
            problem = self._validate(record, body)
            if problem is not None:
                return JSONResponse(_error_body(400, problem), 400)
        reply = self._next_reply(body)
        if reply.raw is not None:
            return self._raw_response(reply)
        if reply.status != 200:
            return self._error_response(reply)
        assert isinstance(reply, FakeAnthropicReply)
        if not body.get("stream"):
            return JSONResponse(self._message(reply, body), headers=reply.headers)
        return self._streaming(self._events(reply, body), 200, reply.headers, "text/event-stream")

    def _check_key(self, record: RecordedRequest) -> dict[str, Any] | None:
        given = record.headers.get("x-api-key", "")
        if given == self.api_key:
            return None
        if not given:
            return _error_body(401, "x-api-key header is required")
        return _error_body(401, "invalid x-api-key")  # the real API does not echo the key

    def _validate(self, record: RecordedRequest, body: dict[str, Any]) -> str | None:
        if "anthropic-version" not in record.headers:
            return "anthropic-version: header is required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        previous = None
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            if i == 0 and role != "user":
                return 'messages: first message must use the "user" role'
            if role == previous:
                return (
                    'messages: roles must alternate between "user" and "assistant", '
                    f'but found multiple "{role}" roles in a row'
                )
            previous = role
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for block in blocks if isinstance(blocks, list) else ():
                if isinstance(block, dict) and block.get("type") == "text" and not block.get("text"):
                    return f"messages.{i}: text content blocks must be non-empty"
        return None

    def _usage(self, reply: FakeAnthropicReply, body: dict[str, Any]) -> tuple[int, int]:
        if reply.usage is not None:
            return reply.usage
        system = body.get("system")
        prompt = sum(
            4 + len(_content_text(m.get("content"))) // 4
            for m in body.get("messages") or []
            if isinstance(m, dict)
        ) + (len(system) // 4 if isinstance(system, str) else 0)
        return prompt, max(1, math.ceil(len(reply.text) / 4))

    async def _events(self, reply: FakeAnthropicReply, body: dict[str, Any]) -> AsyncIterator[bytes]:
        prompt, completion = self._usage(reply, body)
        message: dict[str, Any] = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": str(body.get("model") or self.model),
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        yield _sse("message_start", {"type": "message_start", "message": message})
        index = 0
        if reply.thinking:
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            delta = {"type": "thinking_delta", "thinking": reply.thinking}
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        )
        yield _sse("ping", {"type": "ping"})
        cut = reply.error_after_chars if reply.error_after_chars is not None else reply.drop_after_chars
        n = 0
        async for piece, _last in self._paced(reply, cut):
            delta = {"type": "text_delta", "text": piece}
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            n += 1
            if reply.ping_every and n % reply.ping_every == 0:
                yield _sse("ping", {"type": "ping"})
        if reply.error_after_chars is not None:
            error = {"type": "error", "error": {"type": reply.error_type, "message": reply.error_message}}
            yield _sse("error", error)
            return
        if reply.drop_after_chars is not None:
            return  # the body ends here: no stop reason, no message_stop
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        delta_body: dict[str, Any] = {"stop_reason": reply.finish_reason, "stop_sequence": None}
        if reply.stop_details is not None:
            delta_body["stop_details"] = reply.stop_details
        # output_tokens here is the running total for the whole message, not an increment.
        yield _sse(
            "message_delta",
            {"type": "message_delta", "delta": delta_body, "usage": {"output_tokens": completion}},
        )
        yield _sse("message_stop", {"type": "message_stop"})

    def _message(self, reply: FakeAnthropicReply, body: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = self._usage(reply, body)
        doc: dict[str, Any] = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": reply.text}] if reply.text else [],
            "model": str(body.get("model") or self.model),
            "stop_reason": reply.finish_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
        if reply.stop_details is not None:
            doc["stop_details"] = reply.stop_details
        return doc
