"""Google Gemini provider (the Gemini API's ``streamGenerateContent``).

Config (``[providers.NAME]``, ``type = "gemini"``)::

    [providers.gemini]
    type = "gemini"
    api_key = "${GEMINI_API_KEY}"
    model = "gemini-2.5-flash"
    chunk_timeout = 60                        # max silence before the first / between frames
    options = { temperature = 0.7 }           # generationConfig keys, or top-level ones such as
                                              # safetySettings / tools / cachedContent

The provider streams ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``
with the key in the ``x-goog-api-key`` header (never in the URL, where proxies and access logs
would keep it). Every SSE frame is one ``GenerateContentResponse``: text in
``candidates[0].content.parts[].text``, ``finishReason`` on the last candidate, running
``usageMetadata`` totals, ``promptFeedback.blockReason`` when the prompt itself was blocked.
There is no ``[DONE]``: the body simply ends, so an answer is only whole when a
``finishReason`` (or a block reason) arrived. It does not retry: retries and fallbacks are a
separate resilience layer that sees the typed errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote as url_quote

import httpx
from httpx_sse import ServerSentEvent

from relaybot import (
    GEMINI_IMAGE_LIMITS,
    CapabilityError,
    ChatMessage,
    ContextTooLongError,
    Finish,
    ImagePart,
    ImageRef,
    ProviderAuthError,
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
    VideoPart,
    VideoRef,
    hookimpl,
)

from . import _http
from ._sse import BaseSSEProvider, HTTPProviderConfig, SSEState

__all__ = ["GeminiConfig", "GeminiProvider"]


class GeminiConfig(HTTPProviderConfig):
    """``[providers.NAME]`` keys of a Gemini API provider.

    ``api_key`` is sent as ``x-goog-api-key``, never in the URL. The shared keys (timeouts,
    ``extra_headers``) are documented on :class:`HTTPProviderConfig`.
    """

    type: str = "gemini"
    base_url: str = "https://generativelanguage.googleapis.com"
    api_version: str = "v1beta"
    model: str = "gemini-2.5-flash"
    #: whether the model accepts images (every Gemini model does)
    vision: bool = True


# (model-name prefix, context window, max output tokens); longest prefix wins.
_KNOWN_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gemini-1.5-pro", 2_097_152, 8_192),
    ("gemini-1.5", 1_048_576, 8_192),
    ("gemini-2.0", 1_048_576, 8_192),
    ("gemini-2.5", 1_048_576, 65_536),
    ("gemini-3", 1_048_576, 65_536),
)
_DEFAULT_CONTEXT_WINDOW = 1_048_576
_DEFAULT_MAX_OUTPUT = 8_192

_FILTER_REASONS = {
    "SAFETY": "its safety filters flagged it",
    "RECITATION": "it would have recited copyrighted material",
    "BLOCKLIST": "it contained blocked terms",
    "PROHIBITED_CONTENT": "it may contain prohibited content",
    "SPII": "it may contain sensitive personal information",
    "IMAGE_SAFETY": "its image safety filters flagged it",
}
_LENGTH_MESSAGE = "The answer was cut off because it reached the length limit for replies."
# GenerateContentRequest fields that live beside generationConfig; other option keys go into it.
_TOP_LEVEL_KEYS = frozenset(
    {
        "safetySettings",
        "safety_settings",
        "tools",
        "toolConfig",
        "tool_config",
        "cachedContent",
        "cached_content",
        "labels",
    }
)
_RESERVED_KEYS = frozenset({"contents", "systemInstruction", "system_instruction"})
_UNAVAILABLE_STATUSES = frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "UNKNOWN"})
_TOKEN_OVERFLOW = re.compile(r"exceeds the maximum number of tokens|input token count", re.IGNORECASE)


def _model_info(model: str) -> tuple[int, int]:
    name = model.rsplit("/", 1)[-1].lower()
    best: tuple[str, int, int] | None = None
    for entry in _KNOWN_MODELS:
        if name.startswith(entry[0]) and (best is None or len(entry[0]) > len(best[0])):
            best = entry
    return (best[1], best[2]) if best else (_DEFAULT_CONTEXT_WINDOW, _DEFAULT_MAX_OUTPUT)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _words(enum_name: str) -> str:
    """``HARM_CATEGORY_DANGEROUS_CONTENT`` → ``dangerous content``."""
    return enum_name.removeprefix("HARM_CATEGORY_").replace("_", " ").lower()


@dataclass(slots=True)
class _StreamState(SSEState):
    """What one stream has seen so far (``received`` counts frames; there is no end marker)."""

    finish_reason: str | None = None
    block_reason: str | None = None
    block_message: str | None = None
    flagged: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """The server said why the answer ended (or why there is none)."""
        return self.finish_reason is not None or self.block_reason is not None

    def finish(self) -> Finish:
        if self.block_reason is not None:
            message = f"Gemini blocked this request and did not answer ({self.block_reason}"
            message += f": {', '.join(self.flagged)})." if self.flagged else ")."
            if self.block_message:
                message += f" {self.block_message}"
            return Finish("content_filter", message)
        raw = self.finish_reason or "STOP"
        if raw == "STOP":
            return Finish("stop", "")
        if raw == "MAX_TOKENS":
            return Finish("length", _LENGTH_MESSAGE)
        if raw in _FILTER_REASONS:
            detail = f"{raw}: {', '.join(self.flagged)}" if self.flagged else raw
            return Finish(
                "content_filter",
                f"Gemini's content filter stopped this answer because {_FILTER_REASONS[raw]} ({detail}).",
            )
        return Finish("other", f"The model stopped unexpectedly ({raw}).")

    def flag(self, ratings: Any) -> None:
        """Remember the categories of ``safetyRatings`` that caused a block."""
        for rating in ratings if isinstance(ratings, list) else ():
            if isinstance(rating, dict) and rating.get("blocked") and rating.get("category"):
                words = _words(str(rating["category"]))
                if words not in self.flagged:
                    self.flagged.append(words)


class GeminiProvider(BaseSSEProvider[GeminiConfig, _StreamState]):
    """Streams answers from the Gemini API (``models/{model}:streamGenerateContent``).

    One ``httpx.AsyncClient`` is shared by all requests of an instance; :meth:`aclose` closes
    it. ``transport`` replaces the network (tests, custom TLS/proxy setups). A prompt blocked
    by Gemini's filters ends with ``Finish("content_filter", …)`` and no text.
    """

    _no_events_message = "the response held no GenerateContentResponse frames; is base_url the Gemini API?"

    def __init__(
        self,
        name: str,
        config: GeminiConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        window, max_output = _model_info(config.model)
        capabilities = ProviderCapabilities(
            streaming=True,
            vision=config.vision,
            context_window=config.context_window or window,
            max_output_tokens=config.max_output_tokens or max_output,
            tokenizer=None,  # no local tokenizer for Gemini: the core estimates
            image_limits=GEMINI_IMAGE_LIMITS,
            # Gemini's vision models take video (pictures and sound) as inline data
            video=config.vision,
        )
        self._root = f"{config.base_url.rstrip('/')}/{config.api_version.strip('/')}"
        super().__init__(name, config, capabilities, transport=transport)

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def _endpoint(self, request: ProviderRequest) -> str:
        return self.url_for(request.model or self.config.model)

    def url_for(self, model: str) -> str:
        """The streaming endpoint for ``model`` (``models/`` prefix optional)."""
        name = url_quote(model.removeprefix("models/"), safe="-._~")
        return f"{self._root}/models/{name}:streamGenerateContent?alt=sse"

    # ── request ─────────────────────────────────────────────────────────────────────────────

    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The JSON body for ``request`` (public so hooks and tests can inspect it).

        ``config.options`` then ``request.options`` are merged in: ``safetySettings``,
        ``tools``, ``toolConfig``, ``cachedContent`` and ``labels`` at the top level, a
        ``generationConfig`` dict and every other key into ``generationConfig``.
        ``maxOutputTokens`` is ``request.max_output_tokens`` or ``config.max_output_tokens``
        unless the options set it. Roles map to ``user``/``model``; consecutive messages of one
        role are merged into one turn; ``system`` messages join ``systemInstruction``.
        """
        options = {**self.config.options, **request.options}
        system, contents = self._contents(request)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        generation: dict[str, Any] = {}
        max_output = request.max_output_tokens or self.config.max_output_tokens
        for key, value in options.items():
            if key in _RESERVED_KEYS:
                continue
            if key in ("generationConfig", "generation_config") and isinstance(value, dict):
                generation.update(value)
            elif key in _TOP_LEVEL_KEYS:
                body[key] = value
            else:
                generation[key] = value
        if max_output and not {"maxOutputTokens", "max_output_tokens"} & generation.keys():
            generation["maxOutputTokens"] = max_output
        if generation:
            body["generationConfig"] = generation
        return body

    def _contents(self, request: ProviderRequest) -> tuple[str, list[dict[str, Any]]]:
        system = [request.system] if request.system else []
        contents: list[dict[str, Any]] = []
        for message in request.messages:
            if message.role == Role.SYSTEM:
                if message.text_content:
                    system.append(message.text_content)
                continue
            parts = self._parts(message)
            if not parts:
                continue  # "contents.parts must not be empty"
            role = "model" if message.role == Role.ASSISTANT else "user"
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].extend(parts)  # turns alternate: merge
            else:
                contents.append({"role": role, "parts": parts})
        if not contents:
            raise CapabilityError(f"{self.name}: the Gemini API needs at least one message")
        return "\n\n".join(system), contents

    def _parts(self, message: ChatMessage) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                if part.text:
                    parts.append({"text": part.text})
            elif isinstance(part, ImagePart):
                if not self.capabilities.vision:
                    raise CapabilityError(
                        f"{self.name}: vision = false in [providers.{self.name}], cannot send images"
                    )
                parts.append(self._inline_data(part.image))
            elif isinstance(part, VideoPart):
                if not self.capabilities.video:
                    raise CapabilityError(f"{self.name}: this provider does not take videos")
                parts.append(self._inline_data(part.video))
        return parts

    def _inline_data(self, ref: ImageRef | VideoRef) -> dict[str, Any]:
        """The ``inline_data`` part for ``ref``.

        Hook point: only inline base64 ``data:`` URLs are supported today.
        TODO: resolve ``media:<sha256>`` through the core's media store once it exists (large
        files would then go through the Files API instead of inline data).
        """
        parsed = _http.split_data_url(ref.uri) if ref.uri.startswith("data:") else None
        if parsed is None:
            scheme = ref.uri.split(":", 1)[0]
            raise CapabilityError(
                f"{self.name}: cannot send image {scheme}: references yet (only base64 data: URLs)"
            )
        mime_type, data = parsed
        return {"inline_data": {"mime_type": (mime_type or ref.mime_type).lower(), "data": data}}

    # ── streaming ───────────────────────────────────────────────────────────────────────────

    def _new_state(self) -> _StreamState:
        return _StreamState()

    def _cut_off_detail(self, state: _StreamState) -> str:
        return f"no finishReason after {state.received} frames"

    def _on_event(self, sse: ServerSentEvent, state: _StreamState, where: str) -> list[ProviderEvent]:
        data = sse.data.strip()
        if not data:
            return []
        chunk = self._json_object(data, where, f"frame {state.received + 1}", "frame")
        return self._on_chunk(chunk, state, where)

    def _on_chunk(self, chunk: dict[str, Any], state: _StreamState, where: str) -> list[ProviderEvent]:
        if "error" in chunk:
            raise self._error(chunk["error"], where, "error in the stream")
        state.received += 1
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            # Running totals: the last frame's counts are the answer. Thinking tokens are output
            # the model produced (and is billed for) even though the user does not see them.
            state.usage = Usage(
                _int(usage.get("promptTokenCount")),
                _int(usage.get("candidatesTokenCount")) + _int(usage.get("thoughtsTokenCount")),
            )
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            state.block_reason = str(feedback["blockReason"])
            if isinstance(feedback.get("blockReasonMessage"), str):
                state.block_message = feedback["blockReasonMessage"]
            state.flag(feedback.get("safetyRatings"))
        events: list[ProviderEvent] = []
        for candidate in chunk.get("candidates") or ():
            if not isinstance(candidate, dict) or _int(candidate.get("index")) != 0:
                continue  # candidateCount > 1 is not supported: the first one is the reply
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                # "thought" parts are thinking summaries, not the answer.
                if isinstance(part, dict) and not part.get("thought"):
                    text = part.get("text")
                    if isinstance(text, str) and text:
                        events.append(TextDelta(text))
            if candidate.get("finishReason"):
                state.finish_reason = str(candidate["finishReason"])
                state.flag(candidate.get("safetyRatings"))
        return events

    async def _whole_response(
        self, response: httpx.Response, content_type: str, where: str, state: _StreamState
    ) -> list[ProviderEvent]:
        raw = await response.aread()
        try:
            doc = json.loads(raw) if "json" in content_type else None
        except ValueError:
            doc = None
        chunks = [doc] if isinstance(doc, dict) else doc
        if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
            raise self._response_error(
                where,
                f"expected an event stream, got {content_type or 'no content type'}: "
                f"{_http.quote(raw.decode('utf-8', 'replace'), 120)}",
            )
        events: list[ProviderEvent] = []
        for chunk in chunks:
            events.extend(self._on_chunk(chunk, state, where))
        return events

    # ── errors ──────────────────────────────────────────────────────────────────────────────

    async def _status_error(self, response: httpx.Response, where: str) -> ProviderError:
        body = await _http.read_error_body(response)
        try:
            doc: Any = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, list) and doc:  # streamGenerateContent without alt=sse wraps it
            doc = doc[0]
        error = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(error, dict):
            message, _type, _code = _http.error_details(body)
            error = {"message": message}
        return self._error(error, where, f"failed with HTTP {response.status_code}", response)

    def _error(
        self, error: Any, where: str, what: str, response: httpx.Response | None = None
    ) -> ProviderError:
        """Map a ``google.rpc.Status``-shaped error (HTTP body or mid-stream frame)."""
        if not isinstance(error, dict):
            error = {"message": str(error)}
        status = response.status_code if response is not None else _int(error.get("code")) or None
        rpc_status = str(error.get("status") or "")
        message = _http.quote(str(error.get("message") or rpc_status or "unknown error"))
        if rpc_status:
            message += f" ({rpc_status})"
        text = _http.redact(f"{self.name}: {where} {what}: {message}", self._secrets)
        details = error.get("details")
        items = details if isinstance(details, list) else []
        reasons = {d.get("reason") for d in items if isinstance(d, dict)}
        if "API_KEY_INVALID" in reasons or "API key not valid" in message:
            # Gemini answers a wrong key with 400 INVALID_ARGUMENT, not 401.
            return ProviderAuthError(
                text + " (check the api_key for this provider)", provider=self.name, status=status
            )
        overflow = _TOKEN_OVERFLOW.search(message) or _http.looks_like_context_overflow(message, None)
        if status == 400 and overflow:
            return ContextTooLongError(text, provider=self.name, status=status)
        retry_after = _http.google_retry_delay(details)
        if response is not None:
            return _http.status_error(
                provider=self.name,
                where=where,
                status=response.status_code,
                message=_http.redact(message, self._secrets),
                headers=response.headers,
                retry_after=retry_after,
            )
        # A mid-stream error frame has no HTTP status of its own; its ``code`` mirrors one.
        if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
            return ProviderRateLimitError(text, retry_after=retry_after, provider=self.name, status=status)
        if (status or 0) >= 500 or rpc_status in _UNAVAILABLE_STATUSES:
            return ProviderUnavailableError(text, provider=self.name, status=status)
        return ProviderResponseError(text, provider=self.name, status=status)


@hookimpl
def register_providers(register: Callable[[ProviderType], None]) -> None:
    """Offer the ``gemini`` provider type (Google's Gemini API)."""
    register(ProviderType("gemini", GeminiConfig, GeminiProvider, "Google Gemini API"))
