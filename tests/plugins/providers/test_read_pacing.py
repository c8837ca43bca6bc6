"""Read pacing over a real socket: the aiohttp transport leaves a provider stream unread while
the consumer cannot show text (relaybot.core.streaming.demand) and loses nothing."""

from __future__ import annotations

import asyncio
import time

from relaybot.core.contracts.models import TextDelta
from relaybot.core.streaming.demand import ReadGate, text_demand
from relaybot.core.testing.fake_openai import FakeOpenAIServer
from relaybot.plugins.providers.openai import OpenAIConfig, OpenAIProvider

from .conftest import hello

TOKENS = [f"t{i} " for i in range(60)]


class Demand:
    def __init__(self, wanted: float) -> None:
        self.wanted = wanted
        self.read_gate = ReadGate()

    def text_wanted_in(self) -> float:
        return self.wanted


async def read(
    fake: FakeOpenAIServer, demand: Demand | None, http_client: str = "aiohttp"
) -> tuple[list[str], float]:
    """Stream 60 tokens at 100/s with ``demand`` set; return the text deltas and the duration."""
    fake.add_reply(chunk_size_chars=list(TOKENS), tokens_per_second=100)
    config = OpenAIConfig(
        base_url=fake.base_url, api_key="sk-test", model="gpt-4o-mini", http_client=http_client
    )
    provider = OpenAIProvider("openai", config)
    token = text_demand.set(demand)
    try:
        started = time.monotonic()
        deltas = [e.text async for e in provider.stream(hello()) if isinstance(e, TextDelta)]
        return deltas, time.monotonic() - started
    finally:
        text_demand.reset(token)
        await provider.aclose()


async def test_a_consumer_that_wants_text_now_gets_every_token_as_it_comes():
    async with FakeOpenAIServer(api_key="sk-test") as fake:
        deltas, _ = await read(fake, Demand(0.0))
    assert "".join(deltas) == "".join(TOKENS)
    assert len(deltas) > 40  # one read per token, give or take a merged pair


async def test_a_consumer_that_cannot_show_text_yet_gets_it_in_few_reads_and_complete():
    async with FakeOpenAIServer(api_key="sk-test") as fake:
        deltas, duration = await read(fake, Demand(0.25))
    assert "".join(deltas) == "".join(TOKENS)  # nothing lost while the socket waited
    # 0.6 s of tokens read about every 0.22 s: a handful of reads instead of 60
    assert len(deltas) <= 8, len(deltas)
    assert duration < 1.2  # the end is noticed within one deferral


async def test_waking_the_gate_makes_the_reader_catch_up_at_once():
    demand = Demand(30.0)  # "not for a long time": each deferral lasts MAX_READ_DEFERRAL (1 s)
    async with FakeOpenAIServer(api_key="sk-test") as fake:
        reader = asyncio.create_task(read(fake, demand))
        while not reader.done():  # the chat's turn comes every 50 ms after all
            await asyncio.sleep(0.05)
            demand.read_gate.wake()
        deltas, duration = await reader
    assert "".join(deltas) == "".join(TOKENS)
    assert duration < 1.0  # without the wakes: one 1 s deferral per read


async def test_the_httpx_transport_reads_eagerly_and_loses_nothing_either():
    async with FakeOpenAIServer(api_key="sk-test") as fake:
        deltas, _ = await read(fake, Demand(0.25), http_client="httpx")
    assert "".join(deltas) == "".join(TOKENS)
