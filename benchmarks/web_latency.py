"""Benchmark: the web chat's time from ``POST /api/messages`` to the first streamed token event.

What a user notices as "the bot started answering": the browser posts a message and waits for
the first ``delta`` event of the reply on its SSE stream (``/api/events``). The provider is the
fake OpenAI server answering at once (no first-token delay), so the figure is relaybot's own
overhead: HTTP in, storing the message, building the context, the provider round trip on
loopback, the streaming scheduler's first frame, the SSE event out. (Nagle's algorithm, which
the web chat's listening socket left on under the standard asyncio loop until ``TCP_NODELAY``
was set there, holds back a small write only while an earlier one is unacknowledged: it delays
later frames of a reply, not the first one after an idle stream.)

The bot (a real :class:`~relaybot.core.runtime.app.Relaybot` with the web chat, SQLite in a temporary
folder) and the fake provider run in the main thread's event loop; the "browser" (httpx with
httpx-sse) runs in its own thread and loop, so client work does not queue behind the bot's.

Runs are ``--gap`` seconds apart (default 0.2): the web chat paces frames 50 ms apart per chat,
and a message sent right after the previous reply would measure that pacing instead.

Run: ``.venv/bin/python benchmarks/web_latency.py [--runs N] [--loop auto|uvloop|asyncio]``.
Prints progress to stderr and one JSON object as the last line of stdout: ``p50_ms``,
``p90_ms``, ``p99_ms``, ``max_ms``, ``mean_ms`` of POST → first ``delta`` over the runs (after
``--warmup`` unmeasured ones), and ``done_p50_ms``/``done_p90_ms`` of POST → the reply's ``done``
event (it comes with the reply's last frame, which the per-chat pacing sends ≥ 50 ms after
the first). On this shared 2-core machine the figures swing by tens of ms between runs: compare
several runs, interleaved, before concluding anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from relaybot.core.cli import eventloop
from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
from relaybot.testing import FakeOpenAIServer

CLIENT = "0123456789abcdef0123456789abcdef"
REPLY = "Hello! Here is a short streamed answer, in a few chunks."


class Browser:
    """One tab: an SSE reader and the POSTs, on their own loop in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="browser")
        self.thread.start()
        self.http: httpx.AsyncClient | None = None
        self._first_delta: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self.first_delta_at = 0.0
        self.done_at = 0.0

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def open(self) -> None:
        self.http = httpx.AsyncClient(timeout=30, headers={"X-Relaybot-Client": CLIENT})
        self._first_delta = asyncio.Event()
        self._done = asyncio.Event()
        connected = asyncio.Event()
        self._reader = asyncio.create_task(self._read(connected))
        await asyncio.wait_for(connected.wait(), 10)

    async def _read(self, connected: asyncio.Event) -> None:
        assert self.http is not None and self._first_delta is not None and self._done is not None
        async with aconnect_sse(self.http, "GET", self.url + "/api/events") as source:
            connected.set()
            async for event in source.aiter_sse():
                if event.event == "delta" and not self._first_delta.is_set():
                    self.first_delta_at = time.perf_counter()
                    self._first_delta.set()
                elif event.event in ("done", "interrupted", "error") and not self._done.is_set():
                    self.done_at = time.perf_counter()
                    self._done.set()

    async def one(self) -> tuple[float, float]:
        """POST one message; seconds until its reply's first delta event, and its done event."""
        assert self.http is not None and self._first_delta is not None and self._done is not None
        self._first_delta.clear()
        self._done.clear()
        started = time.perf_counter()
        res = await self.http.post(self.url + "/api/messages", json={"text": "hi"})
        if res.status_code != 202:
            raise RuntimeError(f"POST /api/messages answered {res.status_code}: {res.text}")
        await asyncio.wait_for(self._first_delta.wait(), 30)
        await asyncio.wait_for(self._done.wait(), 30)  # the next run starts on an idle chat
        return self.first_delta_at - started, self.done_at - started

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()

    def shutdown(self) -> None:
        self.call(self.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def measure(runs: int, warmup: int, gap: float, folder: Path) -> list[tuple[float, float]]:
    async with FakeOpenAIServer() as fake:
        config = parse_config(
            {
                "bot": {"default_provider": "fake"},
                "storage": {"url": f"sqlite+aiosqlite:///{folder / 'bench.db'}"},
                "providers": {
                    "fake": {"type": "openai", "base_url": fake.base_url, "api_key": "sk-bench", "model": "m"}
                },
                "connectors": {"web": {"port": 0}},
            },
            "<benchmark>",
        )
        app = Relaybot(config)
        await app.start()
        url = app.connectors["web"].url  # type: ignore[attr-defined]
        browser = Browser(url)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, browser.call, browser.open())
            times: list[tuple[float, float]] = []
            for i in range(warmup + runs):
                # the web chat paces frames per chat (50 ms): start each run on a rested chat
                await asyncio.sleep(gap)
                fake.add_reply(REPLY, chunk_size_chars=8)
                took = await loop.run_in_executor(None, browser.call, browser.one())
                if i >= warmup:
                    times.append(took)
                if (i + 1) % 20 == 0:
                    print(f"  {i + 1}/{warmup + runs}", file=sys.stderr)
            return times
        finally:
            await loop.run_in_executor(None, browser.shutdown)
            await app.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between runs")
    parser.add_argument("--loop", default="auto", choices=["auto", "uvloop", "asyncio"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = eventloop.run(measure(args.runs, args.warmup, args.gap, Path(folder)), args.loop)
    ms = [first * 1000 for first, _ in times]
    done_ms = [done * 1000 for _, done in times]
    result = {
        "runs": len(ms),
        "loop": args.loop,
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p90_ms": round(percentile(ms, 0.90), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "done_p50_ms": round(percentile(done_ms, 0.50), 2),
        "done_p90_ms": round(percentile(done_ms, 0.90), 2),
    }
    print(f"POST → first delta: p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms", file=sys.stderr)
    print(f"POST → done: p50 {result['done_p50_ms']} ms, p90 {result['done_p90_ms']} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
