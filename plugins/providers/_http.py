"""HTTP plumbing shared by the HTTP-based provider plugins (OpenAI-compatible, and the others).

Everything here is provider-neutral: building the one ``httpx.AsyncClient`` a provider keeps,
turning HTTP statuses and transport failures into :mod:`relaybot.core.contracts.errors` exceptions,
reading ``retry-after`` headers, and keeping secrets out of error messages.

Timeouts map onto httpx's own: ``connect_timeout`` is the TCP/TLS connect limit and
``chunk_timeout`` is httpx's *read* timeout, which bounds every single socket read — so it is
both the wait for the response headers/first byte and the longest silence between two chunks.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from relaybot import (
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    use_optional,
)

#: how much of an error body we read and quote; bodies beyond this are not useful in a log line
MAX_ERROR_BODY_BYTES = 16_384
_QUOTE_CHARS = 300
_REDACTED = "[REDACTED]"
#: query parameters that commonly carry credentials (e.g. Gemini's ``?key=``)
_SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "access_token", "token", "sig"})


def build_client(
    *,
    connect_timeout: float,
    chunk_timeout: float,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    http_client: str = "auto",
) -> httpx.AsyncClient:
    """Create the single ``AsyncClient`` a provider instance shares across all its requests.

    The pool has no connection cap: how many replies stream at once is the core's decision
    (per-chat locks, budgets), and a cap here would silently queue streams behind each other.
    ``transport`` (tests, custom set-ups) wins over ``http_client``, which picks what carries
    the bytes: aiohttp (``_aiohttp_transport``, much less CPU per streamed chunk) or httpx's
    own transport.
    """
    timeout = httpx.Timeout(
        connect=connect_timeout,
        read=chunk_timeout,
        write=max(connect_timeout, 10.0),
        pool=connect_timeout,
    )
    if transport is None and use_optional(http_client, "aiohttp", setting="http_client"):
        from ._aiohttp_transport import AiohttpTransport

        transport = AiohttpTransport(max_connections=None, keepalive_expiry=5.0)
    return httpx.AsyncClient(
        timeout=timeout,
        headers=dict(headers or {}),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        transport=transport,
        # Proxies from the environment are honoured (HTTPS_PROXY etc.) as users expect.
        trust_env=True,
    )


def safe_url(url: str | httpx.URL) -> str:
    """``url`` without user info or credential-looking query parameters, for messages."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    if parsed.userinfo:
        parsed = parsed.copy_with(username=None, password=None)
    if parsed.query:
        params = [
            (k, _REDACTED if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parsed.params.multi_items()
        ]
        parsed = parsed.copy_with(params=params)
    return str(parsed)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` (servers may echo keys)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return text


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from ``retry-after-ms`` or ``retry-after`` (secs or date).

    ``retry-after-ms`` (OpenAI) wins because it is more precise. Returns ``None`` when absent
    or unparseable; never negative.
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def quote(text: str, limit: int = _QUOTE_CHARS) -> str:
    """Shorten ``text`` for an error message (one line, at most ``limit`` characters)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_details(body: bytes) -> tuple[str, str | None, str | None]:
    """Extract ``(message, type, code)`` from an error body of any OpenAI-ish shape.

    Handles ``{"error": {"message", "type", "code"}}`` (OpenAI, llama.cpp, OpenRouter),
    ``{"error": "text"}`` (Ollama), ``{"message": ..., "code": ...}`` (vLLM) and plain text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        return quote(text) or "(empty body)", None, None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, str):
            return quote(err), None, None
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)[:_QUOTE_CHARS]
            code = err.get("code")
            etype = err.get("type")
            return (
                quote(str(message)),
                None if etype is None else str(etype),
                None if code is None else str(code),
            )
    return quote(text), None, None


def status_error(
    *,
    provider: str,
    where: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    retry_after: float | None = None,
) -> ProviderError:
    """Map an HTTP error status to the matching :class:`ProviderError` subclass.

    ``where`` is a safe description of the request (``"POST https://…"``), ``message`` the
    server's own explanation (already redacted). Provider-specific refinements (e.g. OpenAI's
    ``context_length_exceeded``) are the caller's job, before calling this. ``retry_after``
    is for providers that send the wait in the body (Gemini); otherwise the ``retry-after``
    headers are read.
    """
    text = f"{provider}: {where} failed with HTTP {status}: {message}"
    if status in (401, 403):
        return ProviderAuthError(
            text + " (check the api_key for this provider)", provider=provider, status=status
        )
    if status == 404:
        return ProviderNotFoundError(text + " (check model and base_url)", provider=provider, status=status)
    if status == 429:
        if retry_after is None:
            retry_after = parse_retry_after(headers)
        if retry_after is not None:
            text += f" (retry after {retry_after:g}s)"
        return ProviderRateLimitError(text, retry_after=retry_after, provider=provider, status=status)
    if status == 408:
        return ProviderTimeoutError(text, provider=provider, status=status)
    if status >= 500:  # includes Anthropic-style 529 "overloaded"
        return ProviderUnavailableError(text, provider=provider, status=status)
    return ProviderResponseError(text, provider=provider, status=status)


def transport_error(
    exc: httpx.TransportError,
    *,
    provider: str,
    where: str,
    connect_timeout: float | None = None,
    chunk_timeout: float | None = None,
) -> ProviderError:
    """Map an httpx transport failure (no HTTP status) to a :class:`ProviderError`.

    The httpx message is included because it says what happened ("connection refused",
    "incomplete chunked read"); it never contains request headers, so no API key.
    """
    detail = quote(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderTimeoutError(
            f"{provider}: {where}: could not connect within {connect_timeout or '?'}s ({detail})",
            provider=provider,
        )
    if isinstance(exc, httpx.WriteTimeout):
        return ProviderTimeoutError(
            f"{provider}: {where}: timed out sending the request ({detail})", provider=provider
        )
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(
            f"{provider}: {where}: the server sent nothing for {chunk_timeout or '?'}s "
            f"(chunk_timeout; {detail})",
            provider=provider,
        )
    if isinstance(exc, httpx.ConnectError):
        return ProviderUnavailableError(f"{provider}: {where}: cannot connect ({detail})", provider=provider)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return ProviderUnavailableError(
            f"{provider}: {where}: stream cut off by the server or network ({detail})",
            provider=provider,
        )
    return ProviderUnavailableError(f"{provider}: {where}: network error ({detail})", provider=provider)


_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|context window|prompt is too long",
    re.IGNORECASE,
)


def looks_like_context_overflow(message: str, code: str | None) -> bool:
    """Whether a 400 error means "prompt too long", across OpenAI-compatible servers."""
    return code == "context_length_exceeded" or bool(_CONTEXT_OVERFLOW.search(message))


async def read_error_body(response: httpx.Response) -> bytes:
    """Read at most :data:`MAX_ERROR_BODY_BYTES` of an error response (a streamed one too)."""
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= MAX_ERROR_BODY_BYTES:
            break
    return bytes(body)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s\s*$")


def parse_duration(value: Any) -> float | None:
    """Seconds of a protobuf JSON ``Duration`` (``"37s"``, ``"0.5s"``), else ``None``."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    return float(match.group(1)) if match else None


def google_retry_delay(details: Any) -> float | None:
    """The ``RetryInfo.retryDelay`` in seconds from a Google API error's ``details`` list.

    Google APIs (Gemini) put the wait into the body instead of a ``retry-after`` header:
    ``{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}``.
    """
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, dict) and "retryDelay" in item:
            delay = parse_duration(item["retryDelay"])
            if delay is not None:
                return delay
    return None


_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL
)


def split_data_url(uri: str) -> tuple[str | None, str] | None:
    """``(mime type or None, base64 payload)`` of a base64 ``data:`` URL, else ``None``.

    APIs that take images as separate ``media_type`` + ``data`` fields (Anthropic, Gemini)
    need the two apart; a ``data:`` URL that is not base64 cannot be sent as is.
    """
    match = _DATA_URL.match(uri)
    if match is None:
        return None
    return match.group("mime"), match.group("data").strip()
