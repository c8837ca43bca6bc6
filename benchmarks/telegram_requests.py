"""Benchmark: how fast python-telegram-bot can send requests from an otherwise idle process.

The floor under the streaming benchmark's first-feedback figure for a burst: every chat needs
its own ``sendChatAction``/``sendMessageDraft``, so N messages arriving at once cannot all get
feedback sooner than N requests take. A child process serves the fake Telegram Bot API (flood
control off); this process sends ``--requests`` ``sendChatAction`` calls through a plain
``telegram.Bot`` (a pool of 256 connections; ``--transport`` aiohttp, relaybot's default, or
httpx, PTB's default) one at a time, 16 and 64 at a time (the scheduler's limit for typing
requests in flight is among them), and reports wall time and CPU per request.

Run: ``.venv/bin/python benchmarks/telegram_requests.py [--requests N] [--transport aiohttp|httpx]
[--loop auto|uvloop|asyncio]``; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from typing import Any

from _streaming_fakes import cpu_seconds

from relaybot.core.cli import eventloop

TOKEN = "123456:BENCH-TOKEN"


def serve(conn: Any) -> None:
    """Child process: the fake Bot API until the parent says stop."""
    from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits

    async def main() -> None:
        async with FakeTelegramServer(TOKEN, limits=FloodLimits.disabled(), strict_chats=False) as tg:
            conn.send(tg.bot_base_url)
            await asyncio.to_thread(conn.recv)

    asyncio.run(main())


async def measure(base_url: str, requests: int, transport: str) -> dict[str, Any]:
    import telegram
    from telegram.request import BaseRequest, HTTPXRequest

    from relaybot.connectors.telegram.request import AiohttpRequest

    request: BaseRequest
    if transport == "aiohttp":
        request = AiohttpRequest(connection_pool_size=256)
    else:
        request = HTTPXRequest(connection_pool_size=256)
    bot = telegram.Bot(TOKEN, base_url=base_url, request=request)
    await bot.initialize()
    result: dict[str, Any] = {
        "benchmark": "telegram_requests",
        "requests": requests,
        "transport": transport,
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }
    try:
        for concurrency in (1, 16, 64):
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with gate:  # noqa: B023 - the gate of this round, awaited within it
                    await bot.send_chat_action(1000 + i, "typing")

            cpu0, t0 = cpu_seconds(), time.monotonic()
            await asyncio.gather(*(one(i) for i in range(requests)))
            wall, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
            result[f"c{concurrency}_wall_ms"] = round(wall * 1000, 1)
            result[f"c{concurrency}_cpu_ms_per_request"] = round(cpu * 1000 / requests, 3)
            result[f"c{concurrency}_requests_per_s"] = round(requests / wall, 1)
    finally:
        await bot.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=250)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(child,), daemon=True)
    proc.start()
    try:
        result = eventloop.run(measure(parent.recv(), args.requests, args.transport), args.loop)
    finally:
        parent.send("stop")
        proc.join(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
