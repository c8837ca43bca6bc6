"""The streaming loop shared by the HTTP + server-sent-events providers (OpenAI, Anthropic, Gemini).

:class:`BaseSSEProvider` owns what the three have in common: the one ``httpx.AsyncClient`` and
its headers, secret redaction, the ``POST`` → status check → SSE loop, the fallback for servers
that answer with one JSON document, the mapping of transport failures to typed errors and the
"stream cut off" / "no events at all" checks. A provider supplies its wire format through small
template methods (:meth:`~BaseSSEProvider.build_body`, :meth:`~BaseSSEProvider._on_event`,
:meth:`~BaseSSEProvider._whole_response` …) and a :class:`SSEState` subclass that knows when an
answer is whole and how it finished.
"""

from __future__ import annotations

import abc
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import httpx
import pydantic
from httpx_sse import ServerSentEvent

# httpx-sse's incremental decoders; EventSource.aiter_sse() wraps them one event at a time,
# _read_events needs them per read (pinned <0.5 in pyproject for this reason)
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from pydantic import Field

from relaybot import (
    BaseProvider,
    BaseProviderConfig,
    ContextTooLongError,
    Finish,
    ProviderCapabilities,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    ProviderResponseError,
    ProviderUnavailableError,
    TextDelta,
    Usage,
    register_secret,
)

from . import _http

__all__ = ["BaseSSEProvider", "HTTPProviderConfig", "SSEState"]

#: ``extra_headers`` whose names look like this carry credentials: their values are redacted
_SECRET_HEADER = re.compile(r"auth|key|token|secret", re.IGNORECASE)


class HTTPProviderConfig(BaseProviderConfig):
    """``[providers.NAME]`` keys every HTTP provider accepts (subclasses set the defaults)."""

    base_url: str
    #: sent in the provider's auth header; never logged or put in error messages
    api_key: pydantic.SecretStr | None = None
    connect_timeout: float = Field(default=10, gt=0)
    #: max seconds of silence from the server: to the first byte, and between two events
    chunk_timeout: float = Field(default=60, gt=0)
    #: values of secret-looking header names are redacted like the key
    extra_headers: dict[str, str] = Field(default_factory=dict)
    #: whether the model accepts images; ``None`` guesses from the model name
    vision: bool | None = None
    #: what carries the HTTP bytes: aiohttp (less CPU per streamed chunk; "auto" uses it when
    #: installed) or httpx's own transport
    http_client: Literal["auto", "aiohttp", "httpx"] = "auto"


@dataclass(slots=True)
class SSEState:
    """What one stream has seen so far. Providers subclass it with their own fields.

    ``received`` counts the events the provider parsed (frames, for the APIs that call them
    so); ``ended`` means the server sent its end marker (``[DONE]``, ``message_stop``) and
    nothing more is read; ``usage`` is the token counts the server reported, if any (yielded
    right before the finish).
    """

    received: int = 0
    ended: bool = False
    usage: Usage | None = None

    @property
    def complete(self) -> bool:
        """The answer is whole: nothing the user would see can still be missing."""
        return self.ended

    @abc.abstractmethod
    def finish(self) -> Finish:
        """The ``Finish`` event for what the server said about the end of the answer."""


ConfigT = TypeVar("ConfigT", bound=HTTPProviderConfig)
StateT = TypeVar("StateT", bound=SSEState)


class BaseSSEProvider(BaseProvider, Generic[ConfigT, StateT]):
    """An HTTP provider that streams its answers as server-sent events.

    One ``httpx.AsyncClient`` is shared by all requests of an instance; :meth:`aclose` closes
    it. ``transport`` replaces the network (tests, custom TLS/proxy setups). Subclasses set
    :attr:`capabilities` (passed to ``__init__``) and implement the template methods.
    """

    #: response header that carries the server's request id (quoted in status errors)
    _request_id_header = "x-request-id"
    #: whether status errors name the error ``type`` of the body (Anthropic's are useful)
    _quote_error_type = False
    #: the error when a body parsed without a single event: probably not this API at all
    _no_events_message = "the response held no events"

    def __init__(
        self,
        name: str,
        config: ConfigT,
        capabilities: ProviderCapabilities,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.model = config.model
        self.capabilities = capabilities
        self._log = logging.getLogger(type(self).__module__)
        api_key = config.api_key.get_secret_value() if config.api_key else None
        headers = {"User-Agent": "relaybot", **self._auth_headers(api_key)}
        headers.update(config.extra_headers)
        self._secrets = [api_key] + [v for k, v in config.extra_headers.items() if _SECRET_HEADER.search(k)]
        for secret in self._secrets:
            # also hide them from every log record, whoever logs them (httpx, the core, …)
            register_secret(secret)
        self._client = _http.build_client(
            connect_timeout=config.connect_timeout,
            chunk_timeout=config.chunk_timeout,
            headers=headers,
            transport=transport,
            http_client=config.http_client,
        )

    # ── what a provider supplies ────────────────────────────────────────────────────────────

    @abc.abstractmethod
    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Headers sent on every request after ``User-Agent`` (key, API version …)."""

    @abc.abstractmethod
    def _endpoint(self, request: ProviderRequest) -> str:
        """The URL to ``POST`` ``request`` to."""

    @abc.abstractmethod
    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The JSON body for ``request`` (public so hooks and tests can inspect it).

        Raises :class:`~relaybot.core.contracts.errors.CapabilityError` before any I/O when the request
        cannot be sent (images to a text-only model …).
        """

    @abc.abstractmethod
    def _new_state(self) -> StateT:
        """A fresh state for one stream."""

    @abc.abstractmethod
    def _on_event(self, sse: ServerSentEvent, state: StateT, where: str) -> Iterable[ProviderEvent]:
        """Parse one SSE event into ``state``; return the text it carried."""

    @abc.abstractmethod
    async def _whole_response(
        self, response: httpx.Response, content_type: str, where: str, state: StateT
    ) -> list[ProviderEvent]:
        """Parse a non-SSE answer (a server or proxy that ignored ``stream``) into ``state``.

        Returns its text events; the usage and finish come from ``state`` as for a stream.
        """

    @abc.abstractmethod
    def _cut_off_detail(self, state: StateT) -> str:
        """What was missing when a stream ended early (``"no finish_reason after 3 frames"``)."""

    # ── streaming ───────────────────────────────────────────────────────────────────────────

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Stream the answer (see :meth:`BaseProvider.stream` for the contract).

        Usage (when the server reports it) is yielded once, right before the final ``Finish``.
        Closing the generator early closes the HTTP response, so the server sees the
        disconnect at once; use ``contextlib.aclosing`` when breaking out of ``async for``.
        """
        body = self.build_body(request)  # fails before any I/O on capability problems
        url = self._endpoint(request)
        where = f"POST {_http.safe_url(url)}"
        state = self._new_state()
        if "model" in body:
            self._log.debug("%s: %s model=%s", self.name, where, body["model"])
        else:  # the model is in the URL (Gemini)
            self._log.debug("%s: %s", self.name, where)
        try:
            async with self._client.stream(
                "POST", url, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.is_error:
                    raise await self._status_error(response, where)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    # Some servers and proxies ignore stream=true (or drop alt=sse) and answer
                    # with one JSON document.
                    for event in await self._whole_response(response, content_type, where, state):
                        yield event
                else:
                    async for batch in self._read_events(response, state, where):
                        for event in batch:
                            yield event
                downloaded = response.num_bytes_downloaded
        except httpx.TransportError as exc:
            # Once the server has said why it stopped, a failure while waiting for the
            # trailing usage / end-marker events loses nothing the user would see.
            if not state.complete:
                raise _http.transport_error(
                    exc,
                    provider=self.name,
                    where=where,
                    connect_timeout=self.config.connect_timeout,
                    chunk_timeout=self.config.chunk_timeout,
                ) from exc
            downloaded = 1
        if not state.complete:
            if state.received == 0 and downloaded > 0:
                raise self._response_error(where, self._no_events_message)
            raise ProviderUnavailableError(
                f"{self.name}: {where}: stream cut off before the answer finished "
                f"({self._cut_off_detail(state)})",
                provider=self.name,
            )
        if state.usage is not None:
            yield state.usage
        yield state.finish()

    async def _read_events(
        self, response: httpx.Response, state: StateT, where: str
    ) -> AsyncIterator[list[ProviderEvent]]:
        """The provider events of the stream, one list per network read, text merged.

        httpx-sse's own decoders parse the bytes, but per read rather than per event: when
        the bot falls behind (hundreds of streams), one read holds several events, and their
        text deltas go up the stack as one :class:`TextDelta`, so every layer above (retries,
        the reply runner, the stream scheduler) runs once per read instead of once per token.
        A lagging bot thereby catches up instead of falling further behind.
        """
        lines = SSELineDecoder()
        events = SSEDecoder()
        batch: list[ProviderEvent] = []
        try:
            async for text in response.aiter_text():
                for line in lines.decode(text):
                    sse = events.decode(line)
                    if sse is not None:
                        batch.extend(self._on_event(sse, state, where))
                        if state.ended:
                            break
                if batch:
                    merged, batch = _merge_text(batch), []
                    yield merged
                if state.ended:
                    return
            # a last line without a newline cannot end an event (the spec drops it), but it
            # may be the blank line that does
            for line in lines.flush():
                sse = events.decode(line)
                if sse is not None:
                    batch.extend(self._on_event(sse, state, where))
        except Exception:
            # an error event (or a transport error) after some text in the same read: the
            # text still reaches the user first, as it would have one event at a time
            if batch:
                merged, batch = _merge_text(batch), []
                yield merged
            raise
        if batch:
            yield _merge_text(batch)

    # ── errors ──────────────────────────────────────────────────────────────────────────────

    async def _status_error(self, response: httpx.Response, where: str) -> ProviderError:
        """The typed error for an HTTP error status (OpenAI-shaped bodies; Gemini overrides)."""
        body = await _http.read_error_body(response)
        message, etype, code = _http.error_details(body)
        message = _http.redact(message, self._secrets)
        if self._quote_error_type and etype and etype not in message:
            message += f" ({etype})"
        request_id = response.headers.get(self._request_id_header)
        if request_id:
            message += f" [request id {request_id}]"
        status = response.status_code
        if status in (400, 413) and _http.looks_like_context_overflow(message, code):
            # e.g. 400 "prompt is too long: 210000 tokens > 200000 maximum"
            return ContextTooLongError(
                f"{self.name}: {where} failed with HTTP {status}: {message}",
                provider=self.name,
                status=status,
            )
        return _http.status_error(
            provider=self.name,
            where=where,
            status=status,
            message=message,
            headers=response.headers,
        )

    def _json_object(self, data: str, where: str, which: str, what: str) -> dict[str, Any]:
        """``data`` parsed as a JSON object, else a response error (``which``/``what`` name it)."""
        try:
            value = json.loads(data)
        except ValueError:
            raise self._response_error(
                where, f"{which} is not valid JSON: {_http.quote(data, 120)}"
            ) from None  # the JSONDecodeError adds nothing for the user
        if not isinstance(value, dict):
            raise self._response_error(where, f"{what} is not a JSON object: {_http.quote(data, 120)}")
        return value

    def _response_error(self, where: str, detail: str) -> ProviderResponseError:
        """A malformed answer: ``detail`` says what was wrong (secrets are redacted)."""
        return ProviderResponseError(
            f"{self.name}: {where}: {_http.redact(detail, self._secrets)}", provider=self.name
        )

    async def aclose(self) -> None:
        """Close the shared HTTP client (and its pooled connections)."""
        await self._client.aclose()


def _merge_text(batch: list[ProviderEvent]) -> list[ProviderEvent]:
    """``batch`` with runs of adjacent text deltas of the same kind joined into one."""
    if len(batch) < 2:
        return batch
    merged: list[ProviderEvent] = []
    for event in batch:
        last = merged[-1] if merged else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta) and last.kind == event.kind:
            merged[-1] = TextDelta(last.text + event.text, event.kind)
        else:
            merged.append(event)
    return merged
