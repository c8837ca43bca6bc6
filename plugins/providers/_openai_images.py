"""The OpenAI images API (``POST {base_url}/images/generations``) for :class:`OpenAIProvider`.

GPT image models (``gpt-image-1`` and newer) always answer with base64 (``b64_json``); DALL·E
models are asked for it (``response_format`` in :attr:`ImageRequest.options`) and a compatible
server that still answers with a ``url`` is followed, without our API key. Errors are the same
typed :class:`~relaybot.core.contracts.errors.ProviderError` values as for chat streams, so the resilience
layer retries, limits and falls back alike; a safety-system refusal is a plain
``ProviderError`` whose ``user_message`` says so (never retried: the prompt would be refused
again).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import httpx

from relaybot import GeneratedImage, ImageRequest, ProviderError, Usage

from . import _http

if TYPE_CHECKING:
    from .openai import OpenAIProvider

#: error codes of a refused prompt (OpenAI: DALL·E / GPT image)
POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
SAFETY_MESSAGE = (
    "I can't create that image: the provider's safety system rejected the prompt. "
    "Try describing it differently."
)


def request_body(request: ImageRequest) -> dict[str, Any]:
    """The JSON body for ``request`` (one image)."""
    body: dict[str, Any] = {"model": request.model, "prompt": request.prompt, "n": 1, "size": request.size}
    if request.quality:
        body["quality"] = request.quality
    body.update(request.options)
    return body


async def generate_image(provider: OpenAIProvider, request: ImageRequest) -> GeneratedImage:
    """One ``images/generations`` call with ``provider``'s client, key and timeouts."""
    url = provider.config.base_url.rstrip("/") + "/images/generations"
    where = f"POST {_http.safe_url(url)}"
    connect = provider.config.connect_timeout
    timeout = httpx.Timeout(connect=connect, read=request.timeout, write=30.0, pool=connect)
    client = provider._client
    try:
        response = await client.post(url, json=request_body(request), timeout=timeout)
        if response.is_error:
            raise await _status_error(provider, response, where)
        item, usage, revised = _first_image(provider, response, where)
        if item.get("b64_json"):
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                raise provider._response_error(where, "b64_json is not valid base64") from None
        else:
            # a URL answer (compatible servers): fetched without our API key
            async with httpx.AsyncClient(timeout=timeout, trust_env=True) as plain:
                download = await plain.get(str(item["url"]))
            if download.is_error:
                raise await _status_error(provider, download, f"GET {_http.safe_url(str(item['url']))}")
            data = download.content
    except httpx.TransportError as exc:
        raise _http.transport_error(
            exc, provider=provider.name, where=where, connect_timeout=connect, chunk_timeout=request.timeout
        ) from None
    return GeneratedImage(data, "image/png", usage, revised)


async def _status_error(provider: OpenAIProvider, response: httpx.Response, where: str) -> ProviderError:
    status = response.status_code
    if status == 400:
        body = await _http.read_error_body(response)
        message, _etype, code = _http.error_details(body)
        if code in POLICY_CODES or "safety system" in message.lower():
            return ProviderError(
                f"{provider.name}: {where} failed with HTTP 400: {_http.redact(message, provider._secrets)}",
                provider=provider.name,
                status=status,
                user_message=SAFETY_MESSAGE,
            )
    return await provider._status_error(response, where)


def _first_image(
    provider: OpenAIProvider, response: httpx.Response, where: str
) -> tuple[dict[str, Any], Usage | None, str]:
    try:
        doc = response.json()
        item = doc["data"][0]
        if not isinstance(item, dict) or not (item.get("b64_json") or item.get("url")):
            raise TypeError("no b64_json or url")
    except (ValueError, LookupError, TypeError) as exc:
        raise provider._response_error(
            where, f"unexpected answer ({type(exc).__name__}: {_http.quote(str(exc), 120)})"
        ) from None
    raw = doc.get("usage") if isinstance(doc, dict) else None
    usage = None
    if isinstance(raw, dict) and ("input_tokens" in raw or "output_tokens" in raw):
        usage = Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0))
    return item, usage, str(item.get("revised_prompt") or "")
