"""Anthropic Messages provider (Claude).

Config (``[providers.NAME]``, ``type = "anthropic"``)::

    [providers.claude]
    type = "anthropic"
    api_key = "${ANTHROPIC_API_KEY}"
    model = "claude-sonnet-4-5"
    max_output_tokens = 1024                  # the API requires max_tokens on every request
    chunk_timeout = 60                        # max silence before the first / between events
    options = { temperature = 0.7 }           # extra JSON body keys (top_k, stop_sequences, …)

The provider streams ``POST {base_url}/v1/messages`` with ``stream: true`` and the
``x-api-key`` / ``anthropic-version`` headers, parses the ``event:``/``data:`` pairs with
httpx-sse and yields :class:`TextDelta` / :class:`Usage` / :class:`Finish` per
:meth:`BaseProvider.stream`. The event sequence is ``message_start`` (input usage) → per content
block ``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` →
``message_delta`` (stop reason, *cumulative* usage) → ``message_stop``, with ``ping`` events
anywhere; event types we do not know are ignored, as the API asks. It does not retry: retries
and fallbacks are a separate resilience layer that sees the typed errors.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent
from pydantic import Field

from relaybot import (
    ANTHROPIC_IMAGE_LIMITS,
    CapabilityError,
    ChatMessage,
    Finish,
    ImagePart,
    ImageRef,
    ProviderCapabilities,
    ProviderError,
    ProviderEvent,
    ProviderRateLimitError,
    ProviderRequest,
    ProviderResponseError,
    ProviderType,
    ProviderUnavailableError,
    Role,
    TextDelta,
    TextPart,
    Usage,
    hookimpl,
)

from . import _http
from ._sse import BaseSSEProvider, HTTPProviderConfig, SSEState

log = logging.getLogger(__name__)

__all__ = ["AnthropicConfig", "AnthropicProvider"]


class AnthropicConfig(HTTPProviderConfig):
    """``[providers.NAME]`` keys of an Anthropic Messages provider.

    ``api_key`` is sent as ``x-api-key``; ``extra_headers`` takes e.g.
    ``{"anthropic-beta" = "…"}``; ``vision = None`` guesses from the model name (Claude 3 and
    newer). The shared keys are documented on :class:`HTTPProviderConfig`.
    """

    type: str = "anthropic"
    #: the API root, without ``/v1`` (a trailing ``/v1`` is tolerated)
    base_url: str = "https://api.anthropic.com"
    model: str = "claude-sonnet-4-5"
    anthropic_version: str = "2023-06-01"
    #: sent as ``max_tokens``, which the Messages API requires on every request
    max_output_tokens: int = Field(default=1024, gt=0)  # type: ignore[assignment]


_DEFAULT_CONTEXT_WINDOW = 200_000
# Per image, base64-decoded (platform-facts: "≤ 5 MB (5,242,880 bytes) per image").
_MAX_IMAGE_BYTES = 5_242_880
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# "claude-3-5-sonnet", "claude-sonnet-4-5", "anthropic.claude-3-haiku…": the generation number
# is the first number after "claude-" (optionally after a family name).
_GENERATION = re.compile(r"claude-(?:[a-z]+-)?(\d+)", re.IGNORECASE)

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
}
_STOP_MESSAGES = {
    "max_tokens": "The answer was cut off because it reached the length limit for replies.",
    "model_context_window_exceeded": (
        "The answer was cut off because the conversation filled the model's context window. "
        "Start a new conversation with /new."
    ),
}
# Mid-stream ``event: error`` types that mean "try again later" rather than "broken answer".
_UNAVAILABLE_ERRORS = frozenset({"overloaded_error", "api_error"})
# Body keys the provider owns; ``options`` cannot override them without breaking the stream.
_RESERVED_KEYS = frozenset({"model", "messages", "stream"})


def _guess_vision(model: str) -> bool:
    match = _GENERATION.search(model.rsplit("/", 1)[-1])
    return match is not None and int(match.group(1)) >= 3


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class _StreamState(SSEState):
    """What one stream has seen so far (``received`` counts events, ``ended`` is ``message_stop``)."""

    input_tokens: int | None = None
    cache_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int | None = None
    stop_reason: str | None = None
    stop_details: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        """The answer is whole: the server said why it stopped, or sent ``message_stop``.

        ``message_delta`` with a ``stop_reason`` is enough: a body that ends right after it (the
        last event of a recording may lack its terminating blank line) lost nothing.
        """
        return self.ended or self.stop_reason is not None

    def add_usage(self, usage: Any) -> None:
        """Take the counts from a ``message_start``/``message_delta`` ``usage`` object.

        The counts are running totals, so each one present replaces the previous value: adding
        ``message_delta``'s ``output_tokens`` to ``message_start``'s would count tokens twice.
        """
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:
            self.input_tokens = _int(usage["input_tokens"])
        if "cache_creation_input_tokens" in usage or "cache_read_input_tokens" in usage:
            # Cached prompt tokens are not in input_tokens, but they are part of the prompt the
            # model read (and are billed): the context size the core tracks includes them.
            self.cache_tokens = _int(usage.get("cache_creation_input_tokens")) + _int(
                usage.get("cache_read_input_tokens")
            )
            # reads are billed at the cached-input price (writes at about the full one)
            self.cache_read_tokens = _int(usage.get("cache_read_input_tokens"))
        if "output_tokens" in usage:
            self.output_tokens = _int(usage["output_tokens"])
        if self.input_tokens is not None or self.output_tokens is not None:
            self.usage = Usage(
                (self.input_tokens or 0) + self.cache_tokens,
                self.output_tokens or 0,
                cached_input_tokens=self.cache_read_tokens,
            )

    def finish(self) -> Finish:
        raw = self.stop_reason or "end_turn"
        reason = _STOP_REASONS.get(raw, "other")
        if reason == "stop":
            return Finish("stop", "")
        if reason == "refusal":
            return Finish("refusal", self._refusal_message())
        if reason == "other":
            return Finish("other", f"The model stopped unexpectedly ({raw}).")
        return Finish(reason, _STOP_MESSAGES.get(raw, ""))

    def _refusal_message(self) -> str:
        # stop_details: {"type": "refusal", "category": "cyber", "explanation": "…"}
        details = self.stop_details or {}
        explanation = details.get("explanation")
        category = details.get("category")
        message = "The model refused this request"
        if isinstance(category, str) and category:
            message += f" ({category.replace('_', ' ')})"
        if isinstance(explanation, str) and explanation.strip():
            return f"{message}: {explanation.strip()}"
        return message + "."


class AnthropicProvider(BaseSSEProvider[AnthropicConfig, _StreamState]):
    """Streams answers from the Anthropic Messages API (``/v1/messages``).

    One ``httpx.AsyncClient`` is shared by all requests of an instance; :meth:`aclose` closes
    it. ``transport`` replaces the network (tests, custom TLS/proxy setups).
    """

    _request_id_header = "request-id"
    _quote_error_type = True
    _no_events_message = "the response held no Messages API events; is base_url the Anthropic API?"

    def __init__(
        self,
        name: str,
        config: AnthropicConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        capabilities = ProviderCapabilities(
            streaming=True,
            vision=_guess_vision(config.model) if config.vision is None else config.vision,
            context_window=config.context_window or _DEFAULT_CONTEXT_WINDOW,
            max_output_tokens=config.max_output_tokens,
            tokenizer=None,  # no local tokenizer for Claude: the core estimates
            image_limits=ANTHROPIC_IMAGE_LIMITS,
        )
        root = config.base_url.rstrip("/").removesuffix("/v1")
        self._url = root + "/v1/messages"
        super().__init__(name, config, capabilities, transport=transport)

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.config.anthropic_version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _endpoint(self, request: ProviderRequest) -> str:
        return self._url

    # ── request ─────────────────────────────────────────────────────────────────────────────

    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The JSON body for ``request`` (public so hooks and tests can inspect it).

        ``max_tokens`` is always set (the API requires it): ``request.max_output_tokens``, else
        ``config.max_output_tokens``, unless options set it. ``config.options`` then
        ``request.options`` are merged in; they may set any key except
        ``model``/``messages``/``stream``. Messages are reshaped to what the API accepts: roles
        alternate (consecutive messages of one role are merged), the first is from the user, and
        ``system`` messages join the top-level ``system`` field.
        """
        options = {**self.config.options, **request.options}
        system, messages = self._messages(request)
        body: dict[str, Any] = {
            "model": request.model or self.config.model,
            "max_tokens": request.max_output_tokens or self.config.max_output_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        for key, value in options.items():
            if key not in _RESERVED_KEYS:
                body[key] = value
        return body

    def _messages(self, request: ProviderRequest) -> tuple[str, list[dict[str, Any]]]:
        system = [request.system] if request.system else []
        turns: list[dict[str, Any]] = []
        for message in request.messages:
            if message.role == Role.SYSTEM:
                # The Messages API has no system role inside messages.
                if message.text_content:
                    system.append(message.text_content)
                continue
            blocks = self._blocks(message)
            if not blocks:
                continue  # the API rejects empty content
            role = "assistant" if message.role == Role.ASSISTANT else "user"
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)  # roles must alternate: merge
            else:
                turns.append({"role": role, "content": blocks})
        dropped = 0
        while turns and turns[0]["role"] == "assistant":
            # The first message must be the user's. A leading assistant turn is what is left
            # when the context was trimmed from the front; without its question it adds little.
            turns.pop(0)
            dropped += 1
        if dropped:
            log.debug("%s: dropped %d leading assistant message(s)", self.name, dropped)
        if not turns:
            raise CapabilityError(f"{self.name}: the Messages API needs at least one user message")
        last = turns[-1]
        if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
            # A final assistant turn is a prefill, and the API rejects one ending in whitespace
            # (the text is not blank: blank blocks were left out above).
            last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
        for turn in turns:
            blocks = turn["content"]
            if len(blocks) == 1 and blocks[0]["type"] == "text":
                turn["content"] = blocks[0]["text"]  # the plain form, as the API docs show it
        return "\n\n".join(system), turns

    def _blocks(self, message: ChatMessage) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                if part.text.strip():  # "text content blocks must be non-empty"
                    blocks.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                if not self.capabilities.vision:
                    raise CapabilityError(
                        f"{self.name}: model {self.model!r} is not known to accept images; "
                        f"set vision = true in [providers.{self.name}] if it does"
                    )
                blocks.append(self._image_block(part.image))
        return blocks

    def _image_block(self, ref: ImageRef) -> dict[str, Any]:
        """The ``image`` content block for ``ref``.

        Hook point: only inline base64 ``data:`` URLs are supported today.
        TODO: resolve ``media:<sha256>`` through the core's media store (re-encoding and
        resizing to the API limits) once it exists.
        """
        parsed = _http.split_data_url(ref.uri) if ref.uri.startswith("data:") else None
        if parsed is None:
            scheme = ref.uri.split(":", 1)[0]
            raise CapabilityError(
                f"{self.name}: cannot send image {scheme}: references yet (only base64 data: URLs)"
            )
        media_type, data = parsed
        media_type = (media_type or ref.mime_type).lower()
        if media_type not in _IMAGE_TYPES:
            raise CapabilityError(
                f"{self.name}: Claude accepts JPEG, PNG, GIF and WebP images, not {media_type}"
            )
        size = len(data) * 3 // 4
        if size > _MAX_IMAGE_BYTES:
            raise CapabilityError(
                f"{self.name}: image of about {size / 1_048_576:.1f} MB is over the API limit of 5 MB"
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}

    # ── streaming ───────────────────────────────────────────────────────────────────────────

    def _new_state(self) -> _StreamState:
        return _StreamState()

    def _cut_off_detail(self, state: _StreamState) -> str:
        return f"no stop_reason and no message_stop after {state.received} events"

    def _on_event(self, sse: ServerSentEvent, state: _StreamState, where: str) -> list[ProviderEvent]:
        data = sse.data.strip()
        if not data:
            return []
        payload = self._json_object(data, where, f"event {state.received + 1} ({sse.event})", "event data")
        state.received += 1
        # The ``type`` inside the data is authoritative; the ``event:`` line repeats it.
        kind = payload.get("type") or sse.event
        if kind == "error" or sse.event == "error":
            raise self._stream_error(payload, where)
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                state.add_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = payload.get("content_block") or {}
            text = block.get("text") if block.get("type") == "text" else None
            if isinstance(text, str) and text:
                return [TextDelta(text)]
        elif kind == "content_block_delta":
            delta = payload.get("delta") or {}
            # thinking_delta, signature_delta, input_json_delta, citations_delta: not reply text
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            if isinstance(text, str) and text:
                return [TextDelta(text)]
        elif kind == "message_delta":
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                state.stop_reason = str(delta["stop_reason"])
            if isinstance(delta.get("stop_details"), dict):
                state.stop_details = delta["stop_details"]
            state.add_usage(payload.get("usage"))
        elif kind == "message_stop":
            state.ended = True
        # ping, content_block_stop and event types added after this was written: ignored.
        return []

    def _stream_error(self, payload: dict[str, Any], where: str) -> ProviderError:
        error = payload.get("error")
        etype = str(error.get("type") or "") if isinstance(error, dict) else ""
        message = (error.get("message") if isinstance(error, dict) else None) or etype or "unknown error"
        text = _http.redact(
            f"{self.name}: {where}: error event in the stream: {_http.quote(str(message))}"
            + (f" ({etype})" if etype else ""),
            self._secrets,
        )
        if etype in _UNAVAILABLE_ERRORS:
            return ProviderUnavailableError(text, provider=self.name)
        if etype == "rate_limit_error":
            return ProviderRateLimitError(text, provider=self.name)
        return ProviderResponseError(text, provider=self.name)

    async def _whole_response(
        self, response: httpx.Response, content_type: str, where: str, state: _StreamState
    ) -> list[ProviderEvent]:
        raw = await response.aread()
        try:
            doc = json.loads(raw) if "json" in content_type else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("type") != "message":
            raise self._response_error(
                where,
                f"expected an event stream, got {content_type or 'no content type'}: "
                f"{_http.quote(raw.decode('utf-8', 'replace'), 120)}",
            )
        state.stop_reason = str(doc.get("stop_reason") or "end_turn")
        if isinstance(doc.get("stop_details"), dict):
            state.stop_details = doc["stop_details"]
        state.add_usage(doc.get("usage"))
        return [
            TextDelta(block["text"])
            for block in doc.get("content") or ()
            if isinstance(block, dict) and block.get("type") == "text" and block.get("text")
        ]


@hookimpl
def register_providers(register: Callable[[ProviderType], None]) -> None:
    """Offer the ``anthropic`` provider type (Claude through the Messages API)."""
    register(ProviderType("anthropic", AnthropicConfig, AnthropicProvider, "Anthropic Messages (Claude)"))
