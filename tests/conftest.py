"""Shared fixtures for relaybot's own tests (the public kit's fixtures come from its pytest plugin)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaybot.testing import FakeOpenAIServer

#: the shared folder (design docs, recorded streams) sits beside the checkout
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_STREAMS = SHARED / "fixtures" / "streams"


@pytest.fixture
def fake_openai_url() -> Iterator[str]:
    """A FakeOpenAIServer in its own thread and loop, for tests that run relaybot as a subprocess."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        async with FakeOpenAIServer() as fake:
            holder["url"] = fake.base_url
            holder["stop"] = stop = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10), "fake server did not start"
    yield str(holder["url"])
    loop: asyncio.AbstractEventLoop = holder["loop"]  # type: ignore[assignment]
    loop.call_soon_threadsafe(holder["stop"].set)  # type: ignore[attr-defined]
    thread.join(5)
