"""Helpers shared by the HTTP provider tests (OpenAI, Anthropic, Gemini).

Test modules import them with ``from .conftest import …``. ``collect``/``failure`` run a
provider's stream the way the core does and check the stream contract on the way. The checks
that are the same for every provider (chunk timeouts, closing the stream on ``aclose`` and
cancellation, the HTTP errors) are the public contract kit,
:mod:`relaybot.core.testing.provider_contract`: each provider's test module runs it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from relaybot.core.contracts.models import (
    ChatMessage,
    ProviderRequest,
    Role,
)
from relaybot.core.contracts.provider import BaseProvider

# re-exported: the test modules import them from here, as before the kit existed
from relaybot.core.testing.provider_contract import collect, failure, text_of  # noqa: F401

#: recorded provider streams (copies of the shared fixtures, see its README)
STREAMS = Path(__file__).resolve().parents[2] / "fixtures" / "streams"

P = TypeVar("P", bound=BaseProvider)


def fixture_bytes(name: str) -> bytes:
    """A recorded stream (``tests/fixtures/streams/NAME``)."""
    return (STREAMS / name).read_bytes()


def hello(text: str = "hi", **kw: object) -> ProviderRequest:
    return ProviderRequest("Be brief.", [ChatMessage.text(Role.USER, text)], **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["aiohttp", "httpx"])
def http_client(request: pytest.FixtureRequest) -> str:
    """Each provider test runs over both HTTP transports (``http_client`` option)."""
    return str(request.param)


@contextlib.asynccontextmanager
async def provider_maker(
    build: Callable[..., P], *, base_url: str, api_key: str, http_client: str = "auto"
) -> AsyncIterator[Callable[..., P]]:
    """``make(**config)`` for a ``make`` fixture: providers aimed at a fake, closed at the end.

    ``build(**config)`` creates the provider; ``base_url``, ``api_key`` and ``http_client``
    are the defaults.
    """
    made: list[P] = []

    def make(**config: Any) -> P:
        config.setdefault("base_url", base_url)
        config.setdefault("api_key", api_key)
        config.setdefault("http_client", http_client)
        provider = build(**config)
        made.append(provider)
        return provider

    try:
        yield make
    finally:
        for provider in made:
            await provider.aclose()


class Pieces(httpx.AsyncByteStream):
    """A response body delivered in exactly these pieces (a mock transport cannot coalesce)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def cut(body: bytes, offsets: Iterable[int]) -> list[bytes]:
    """``body`` cut at the byte ``offsets`` (no empty pieces)."""
    bounds = [0, *sorted(set(offsets)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def sse_transport(pieces: list[bytes], seen: list[httpx.Request] | None = None) -> httpx.MockTransport:
    """A transport that answers every request with an event stream of ``pieces``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Pieces(pieces))

    return httpx.MockTransport(handler)
