"""Helpers shared by the HTTP provider tests (OpenAI, Anthropic, Gemini).

Test modules import them with ``from .conftest import …``. They run a provider's stream the way
the core does and check the stream contract on the way; the checks that are the same for every
provider (chunk timeouts, closing the HTTP stream on ``aclose``/cancellation) live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from relaybot.core.errors import ProviderError, ProviderTimeoutError
from relaybot.core.models import (
    ChatMessage,
    Finish,
    ProviderEvent,
    ProviderRequest,
    Role,
    TextDelta,
    Usage,
)
from relaybot.core.provider import BaseProvider

#: recorded provider streams (copies of the shared fixtures, see its README)
STREAMS = Path(__file__).resolve().parents[2] / "fixtures" / "streams"

P = TypeVar("P", bound=BaseProvider)


def fixture_bytes(name: str) -> bytes:
    """A recorded stream (``tests/fixtures/streams/NAME``)."""
    return (STREAMS / name).read_bytes()


def hello(text: str = "hi", **kw: object) -> ProviderRequest:
    return ProviderRequest("Be brief.", [ChatMessage.text(Role.USER, text)], **kw)  # type: ignore[arg-type]


async def collect(provider: BaseProvider, request: ProviderRequest | None = None) -> list[ProviderEvent]:
    """All events of one stream, checking the stream contract on the way."""
    events = [e async for e in provider.stream(request or hello())]
    assert isinstance(events[-1], Finish)
    assert sum(isinstance(e, Finish) for e in events) == 1
    assert sum(isinstance(e, Usage) for e in events) <= 1
    return events


def text_of(events: Iterable[ProviderEvent], kind: str | None = None) -> str:
    """The text of the deltas (only those of ``kind`` when given)."""
    return "".join(e.text for e in events if isinstance(e, TextDelta) and (kind is None or e.kind == kind))


async def failure(
    provider: BaseProvider, request: ProviderRequest | None = None, *, kind: str | None = None
) -> tuple[str, ProviderError]:
    """Run a stream that must fail; return (text delivered before the error, the error)."""
    got: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(request or hello()):
            got.append(event)
    return text_of(got, kind), info.value


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


# ── checks every streaming HTTP provider must pass ──────────────────────────────────────────
# ``fake`` is one of the fake servers of relaybot.core.testing: they share add_reply's pacing
# arguments and wait_for_disconnects.


async def check_chunk_timeout(fake: Any, make: Callable[..., BaseProvider], stall: str) -> None:
    """Silence before the first byte or between chunks longer than chunk_timeout is a timeout."""
    if stall == "first_byte":
        fake.add_reply("late", first_token_delay=3)
    else:
        fake.add_reply("one two three", chunk_size_chars=4, tokens_per_second=0.3)
    text, err = await failure(make(chunk_timeout=0.3))
    assert type(err) is ProviderTimeoutError
    assert "0.3s" in str(err)
    assert text == ("" if stall == "first_byte" else "one ")


async def check_aclose_closes_the_http_stream(fake: Any, provider: BaseProvider) -> None:
    fake.add_reply("word " * 200, chunk_size_chars=5, tokens_per_second=20)
    stream = provider.stream(hello())
    assert await anext(stream) == TextDelta("word ")
    await stream.aclose()  # type: ignore[attr-defined]
    async with asyncio.timeout(5):
        await fake.wait_for_disconnects(1)


async def check_task_cancel_closes_the_http_stream(fake: Any, provider: BaseProvider) -> None:
    fake.add_reply("word " * 200, chunk_size_chars=5, tokens_per_second=20)
    first = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(provider.stream(hello())) as stream:  # type: ignore[type-var]
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(5):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await fake.wait_for_disconnects(1)
    fake.add_reply("again")  # the provider keeps working after a cancelled stream
    assert text_of(await collect(provider)) == "again"
