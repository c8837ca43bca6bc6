"""OpenAI-compatible Chat Completions provider.

Works with OpenAI, OpenRouter, vLLM, Ollama, LM Studio and the llama.cpp server.

Config (``[providers.NAME]``, ``type = "openai"``)::

    [providers.openai]
    type = "openai"
    base_url = "https://api.openai.com/v1"   # http://127.0.0.1:11434/v1 for Ollama, …
    api_key = "${OPENAI_API_KEY}"            # omit for local servers without auth
    model = "gpt-4o-mini"
    chunk_timeout = 60                        # max silence before the first / between chunks
    options = { temperature = 0.7 }           # extra JSON body keys

The provider streams ``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options.include_usage``, parses the ``data:`` frames with httpx-sse and yields
:class:`TextDelta` / :class:`Usage` / :class:`Finish` per :meth:`BaseProvider.stream`. It also
draws images (``images/generations``, see :mod:`._openai_images`). It does not retry: retries
and fallbacks are a separate resilience layer that sees the typed errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from relaybot import (
    OPENAI_IMAGE_LIMITS,
    CapabilityError,
    ChatMessage,
    Finish,
    GeneratedImage,
    ImagePart,
    ImageRef,
    ImageRequest,
    ProviderCapabilities,
    ProviderEvent,
    ProviderRequest,
    ProviderType,
    TextDelta,
    TextPart,
    Usage,
    hookimpl,
)

from . import _http, _openai_images
from ._sse import BaseSSEProvider, HTTPProviderConfig, SSEState

__all__ = ["OpenAIConfig", "OpenAIProvider"]


class OpenAIConfig(HTTPProviderConfig):
    """``[providers.NAME]`` keys of an OpenAI-compatible provider.

    ``api_key`` is sent as ``Authorization: Bearer …``; the shared keys (timeouts,
    ``extra_headers``, ``vision``) are documented on :class:`HTTPProviderConfig`.
    """

    type: str = "openai"
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    organization: str | None = None


# (model-name prefix, context window, max output tokens, tiktoken encoding). Matched by the
# longest prefix of the last path segment, so "openai/gpt-4o-2024-08-06" finds "gpt-4o".
_KNOWN_MODELS: tuple[tuple[str, int, int, str | None], ...] = (
    ("gpt-5", 400_000, 128_000, "o200k_base"),
    ("gpt-4.1", 1_047_576, 32_768, "o200k_base"),
    ("gpt-4o", 128_000, 16_384, "o200k_base"),
    ("chatgpt-4o", 128_000, 16_384, "o200k_base"),
    ("o1", 200_000, 100_000, "o200k_base"),
    ("o1-mini", 128_000, 65_536, "o200k_base"),
    ("o3", 200_000, 100_000, "o200k_base"),
    ("o4", 200_000, 100_000, "o200k_base"),
    ("gpt-4-turbo", 128_000, 4_096, "cl100k_base"),
    ("gpt-4-1106", 128_000, 4_096, "cl100k_base"),
    ("gpt-4-0125", 128_000, 4_096, "cl100k_base"),
    ("gpt-4-32k", 32_768, 4_096, "cl100k_base"),
    ("gpt-4", 8_192, 4_096, "cl100k_base"),
    ("gpt-3.5-turbo", 16_385, 4_096, "cl100k_base"),
)
# Unknown models are usually local ones (Ollama, llama.cpp): a small window is the safe guess,
# because over-estimating it makes the server reject or silently truncate long prompts.
_DEFAULT_CONTEXT_WINDOW = 8_192
_DEFAULT_MAX_OUTPUT = 2_048

_VISION_HINTS = re.compile(
    r"gpt-4o|gpt-4\.1|gpt-5|gpt-4-turbo|chatgpt-4o|^o[134](?:-pro|-\d|$)|^o4-mini|vision|llava"
    r"|pixtral|gemma-?3|claude|gemini|-vl\b|moondream|minicpm-v",
    re.IGNORECASE,
)

# Normalised Finish reasons (see relaybot.core.contracts.models.Finish); unknown values become "other".
_FINISH_REASONS = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "content_filter": "content_filter",
    "refusal": "refusal",
}
_FINISH_MESSAGES = {
    "length": "The reply was cut off because it reached the model's output limit.",
    "content_filter": "The provider's content filter stopped this reply.",
    "refusal": "The model declined to answer this request.",
}
# Body keys the provider owns; ``options`` cannot override them without breaking the stream.
_RESERVED_KEYS = frozenset({"model", "messages", "stream"})
_NO_EVENTS = "the response held no Chat Completions events; is base_url an OpenAI-compatible API?"


def _model_info(model: str) -> tuple[int, int, str | None]:
    name = model.rsplit("/", 1)[-1].lower()
    best: tuple[str, int, int, str | None] | None = None
    for entry in _KNOWN_MODELS:
        if name.startswith(entry[0]) and (best is None or len(entry[0]) > len(best[0])):
            best = entry
    if best is None:
        return _DEFAULT_CONTEXT_WINDOW, _DEFAULT_MAX_OUTPUT, None
    return best[1], best[2], best[3]


def _guess_vision(model: str) -> bool:
    return bool(_VISION_HINTS.search(model.rsplit("/", 1)[-1]))


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        cached_input_tokens=cached,
    )


@dataclass(slots=True)
class _StreamState(SSEState):
    """What one stream has seen so far (``received`` counts frames, ``ended`` is ``[DONE]``)."""

    finish_reason: str | None = None
    refused: bool = False

    @property
    def complete(self) -> bool:
        """The answer is whole: the server said why it stopped, or said ``[DONE]``."""
        return self.ended or self.finish_reason is not None

    def finish(self) -> Finish:
        reason = _FINISH_REASONS.get(self.finish_reason or "stop", "other")
        if reason == "stop" and self.refused:
            # OpenAI ends a refusal with finish_reason "stop"; the user must learn it was refused.
            reason = "refusal"
        message = _FINISH_MESSAGES.get(reason, "")
        if reason == "other":
            message = f"The model stopped unexpectedly ({self.finish_reason})."
        return Finish(reason, message)


class OpenAIProvider(BaseSSEProvider[OpenAIConfig, _StreamState]):
    """Streams answers from an OpenAI-compatible ``/chat/completions`` endpoint.

    One ``httpx.AsyncClient`` is shared by all requests of an instance; :meth:`aclose` closes
    it. ``transport`` replaces the network (tests, custom TLS/proxy setups).
    """

    _no_events_message = _NO_EVENTS

    def __init__(
        self,
        name: str,
        config: OpenAIConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        window, max_output, tokenizer = _model_info(config.model)
        capabilities = ProviderCapabilities(
            streaming=True,
            vision=_guess_vision(config.model) if config.vision is None else config.vision,
            context_window=config.context_window or window,
            max_output_tokens=config.max_output_tokens or max_output,
            tokenizer=tokenizer,
            image_limits=OPENAI_IMAGE_LIMITS,
            image_generation=True,  # the images API (a compatible server may lack it: 404)
        )
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        super().__init__(name, config, capabilities, transport=transport)
        # The official API wants max_completion_tokens (o-series reject max_tokens); most
        # compatible servers only know max_tokens.
        host = httpx.URL(self._url).host
        self._max_tokens_key = (
            "max_completion_tokens" if host.endswith(("openai.com", "openai.azure.com")) else "max_tokens"
        )

    async def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Draw one picture with ``POST {base_url}/images/generations`` (see
        :mod:`._openai_images`); typed errors like :meth:`stream`."""
        return await _openai_images.generate_image(self, request)

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if self.config.organization:
            headers["OpenAI-Organization"] = self.config.organization
        return headers

    def _endpoint(self, request: ProviderRequest) -> str:
        return self._url

    # ── request ─────────────────────────────────────────────────────────────────────────────

    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The JSON body for ``request`` (public so hooks and tests can inspect it).

        ``config.options`` then ``request.options`` are merged in; they may set any key except
        ``model``/``messages``/``stream``. An explicit ``max_tokens`` or
        ``max_completion_tokens`` in options wins over ``max_output_tokens``.
        """
        options = {**self.config.options, **request.options}
        body: dict[str, Any] = {
            "model": request.model or self.config.model,
            "messages": self._messages(request),
            "stream": True,
        }
        max_output = request.max_output_tokens or self.config.max_output_tokens
        if max_output and not {"max_tokens", "max_completion_tokens"} & options.keys():
            body[self._max_tokens_key] = max_output
        for key, value in options.items():
            if key not in _RESERVED_KEYS:
                body[key] = value
        stream_options = body.get("stream_options")
        body["stream_options"] = {
            **(stream_options if isinstance(stream_options, dict) else {}),
            "include_usage": True,
        }
        return body

    def _messages(self, request: ProviderRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(self._message(m) for m in request.messages)
        return messages

    def _message(self, message: ChatMessage) -> dict[str, Any]:
        if all(isinstance(p, TextPart) for p in message.parts):
            # Plain string content: every compatible server accepts it, not all accept parts.
            return {"role": str(message.role), "content": message.text_content}
        parts: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                if not self.capabilities.vision:
                    raise CapabilityError(
                        f"{self.name}: model {self.model!r} is not known to accept images; "
                        f"set vision = true in [providers.{self.name}] if it does"
                    )
                url = self._image_url(part.image)
                parts.append({"type": "image_url", "image_url": {"url": url, "detail": "auto"}})
        return {"role": str(message.role), "content": parts}

    def _image_url(self, ref: ImageRef) -> str:
        """The ``image_url.url`` to send for ``ref``.

        Hook point: only inline ``data:`` URLs are supported today.
        TODO: resolve ``media:<sha256>`` through the core's media store (and re-encode/resize
        to the API limits) once it exists; ``https://`` could be passed through for OpenAI
        itself, but many compatible servers cannot fetch URLs, so it waits for the same hook.
        """
        if ref.uri.startswith("data:"):
            return ref.uri
        scheme = ref.uri.split(":", 1)[0]
        raise CapabilityError(f"{self.name}: cannot send image {scheme}: references yet (only data: URLs)")

    # ── streaming ───────────────────────────────────────────────────────────────────────────

    def _new_state(self) -> _StreamState:
        return _StreamState()

    def _cut_off_detail(self, state: _StreamState) -> str:
        return f"no finish_reason and no [DONE] after {state.received} frames"

    def _on_event(self, sse: ServerSentEvent, state: _StreamState, where: str) -> list[ProviderEvent]:
        data = sse.data.strip()
        if not data:
            return []
        if data == "[DONE]":
            state.ended = True
            return []
        chunk = self._json_object(data, where, f"frame {state.received + 1}", "frame")
        if chunk.get("error") or sse.event == "error":
            message, _type, _code = _http.error_details(data.encode())
            raise self._response_error(where, f"error event in the stream: {message}")
        state.received += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict) and usage:
            # Servers that repeat usage send running totals: the last one is the answer.
            state.usage = _usage(usage)
        events: list[ProviderEvent] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is not supported: only the first choice is the reply
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                state.refused = True
                events.append(TextDelta(refusal, kind="refusal"))
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
        return events

    async def _whole_response(
        self, response: httpx.Response, content_type: str, where: str, state: _StreamState
    ) -> list[ProviderEvent]:
        raw = await response.aread()
        try:
            doc = json.loads(raw) if "json" in content_type else None
            choice = doc["choices"][0] if isinstance(doc, dict) else None
        except (ValueError, LookupError, TypeError):
            choice = None
        if not isinstance(choice, dict) or not isinstance(doc, dict):
            raise self._response_error(
                where,
                f"expected an event stream, got {content_type or 'no content type'}: "
                f"{_http.quote(raw.decode('utf-8', 'replace'), 120)}",
            )
        state.finish_reason = choice.get("finish_reason") or "stop"
        message = choice.get("message") or {}
        events: list[ProviderEvent] = []
        if message.get("content"):
            events.append(TextDelta(str(message["content"])))
        if message.get("refusal"):
            state.refused = True
            events.append(TextDelta(str(message["refusal"]), kind="refusal"))
        usage = doc.get("usage")
        if isinstance(usage, dict):
            state.usage = _usage(usage)
        return events


@hookimpl
def register_providers(register: Callable[[ProviderType], None]) -> None:
    """Offer the ``openai`` provider type (any OpenAI-compatible Chat Completions server)."""
    register(ProviderType("openai", OpenAIConfig, OpenAIProvider, "OpenAI-compatible Chat Completions"))
