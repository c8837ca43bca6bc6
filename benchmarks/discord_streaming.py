"""Benchmark: many concurrent streamed replies through the real Discord connector.

``benchmarks/streaming.py --platform discord`` runs this (or run it directly). The fake Discord
(REST + gateway, Discord's observed limits: 5 sends and 5 edits per 5 s per channel, 50/s
overall, real 429s) and a paced OpenAI server run in a child process; a real
:class:`~relaybot.core.runtime.app.Relaybot` with the Discord connector (discord.py, the connector's
defaults) runs here. ``--channels`` channels get ``--per-channel`` people mentioning the bot at
the same moment (several streams sharing one channel's buckets), ``--dms`` people write in DMs;
every answer is ``--tokens`` tokens at ``--rate`` tokens/s with a code block in its middle, so
most answers split across messages.

Checked per reply: joined across its parts (each a reply to the previous one) it is the
provider's text (fences closed and reopened at cuts aside), every part is within 2,000 UTF-16
units with balanced code fences; overall: the platform's 429s (the goal is 0).

Run (from the repository root)::

    .venv/bin/python benchmarks/streaming.py --platform discord             # 20 × 3 + 20 DMs
    .venv/bin/python benchmarks/discord_streaming.py --channels 5 --dms 5 --tokens 300

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _discord_fakes import API_KEY, DiscordPlan, cpu_seconds, discord_tokens, serve_in_child

from relaybot import hookimpl
from relaybot.core.cli import eventloop
from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ReplyCounter:
    """A plugin: counts finished replies (and what the provider said)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done: dict[tuple[str, str, str], str] = {}
        self.all_done = asyncio.Event()

    @hookimpl
    def after_reply(self, reply: Any) -> None:
        self.done[(reply.chat.chat, reply.user_id, str(reply.message_id))] = reply.text
        if len(self.done) >= self.expected:
            self.all_done.set()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = DiscordPlan(
        args.channels, args.per_channel, args.dms, args.tokens, args.rate, args.first_token_delay
    )
    expected = len(plan.keys())
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=serve_in_child, args=(child, plan), daemon=True)
    proc.start()
    urls = await asyncio.to_thread(conn.recv)

    async def ask(command: str) -> Any:
        conn.send((command,))
        return await asyncio.to_thread(conn.recv)

    tmp = tempfile.TemporaryDirectory(prefix="relaybot-bench-discord-")
    db = Path(tmp.name) / "bench.db"
    config = {
        "bot": {"default_provider": "bench", "busy_policy": "queue"},
        "storage": {"url": f"sqlite+aiosqlite:///{db}", "media_dir": str(db.parent / "media")},
        "providers": {"bench": {"type": "openai", "base_url": urls["openai_base_url"], "api_key": API_KEY,
                                "model": "gpt-4o-mini"}},
        "connectors": {"discord": {"token": urls["token"], "api_base": urls["api_base"],
                                   "gateway_url": urls["gateway_url"]}},
    }  # fmt: skip
    counter = ReplyCounter(expected)
    app = Relaybot(parse_config(config, "<benchmark>"), extra_plugins=[("bench-counter", counter)])
    await app.start()
    app.token_counter("bench")  # warm-up, as in the Telegram benchmark
    scheduler = app.scheduler("discord")
    log(
        f"bot up; {args.channels} channels × {args.per_channel} people + {args.dms} DMs, "
        f"{args.tokens} tokens at {args.rate:g}/s each"
    )
    cpu_start = cpu_seconds()
    t0 = time.monotonic()
    await ask("inject")
    deadline = t0 + args.seconds_limit
    timed_out = False
    while not counter.all_done.is_set():
        try:
            left = max(0.01, deadline - time.monotonic())
            await asyncio.wait_for(counter.all_done.wait(), timeout=min(5.0, left))
        except TimeoutError:
            pass
        seen = await ask("progress")
        log(
            f"t={time.monotonic() - t0:6.1f}s replies {len(counter.done)}/{expected} requests "
            f"{scheduler.stats.requests} fake saw {seen['requests']} calls, {seen['platform_429']} x 429, "
            f"cpu {cpu_seconds() - cpu_start:.1f}s"
        )
        if time.monotonic() >= deadline and not counter.all_done.is_set():
            timed_out = True
            log(f"time limit of {args.seconds_limit:g}s reached; reporting what completed")
            break
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu_start
    await asyncio.sleep(0.5)
    seen = await ask("collect")
    connector = app.connectors["discord"]
    tracker_429 = connector.tracker.rate_limited
    await app.stop(timeout=5.0)
    await ask("stop")
    await asyncio.to_thread(proc.join, 10)
    tmp.cleanup()

    replies = seen["replies"]
    said = set(counter.done.values())
    provider_ok = sum(1 for key in plan.keys() if "".join(discord_tokens(key, plan.tokens)) in said)
    requests = [r["requests"] for r in replies.values() if r["parts"]]
    edits = [r["edits"] for r in replies.values() if r["parts"]]
    parts = [r["parts"] for r in replies.values()]
    done = len(counter.done)
    return {
        "platform": "discord",
        "replies_expected": expected,
        "replies_completed": done,
        "timed_out": timed_out,
        "identical": all(r["identical"] for r in replies.values()),
        "identical_count": sum(r["identical"] for r in replies.values()),
        "provider_text_ok": provider_ok,
        "all_within_limit": all(r["within_limit"] for r in replies.values()),
        "all_fences_balanced": all(r["fences_balanced"] for r in replies.values()),
        "platform_429": seen["platform_429"],
        "connector_saw_429": tracker_429,
        "platform_errors": seen["platform_errors"],
        "invalid_requests": seen["invalid_requests"],
        "parts_per_reply_mean": round(statistics.mean(parts), 2) if parts else None,
        "split_replies": sum(p > 1 for p in parts),
        "requests_per_reply_mean": round(statistics.mean(requests), 2) if requests else None,
        "edits_per_reply_mean": round(statistics.mean(edits), 2) if edits else None,
        "requests_total": seen["requests_total"],
        "wall_s": round(wall, 2),
        "bot_cpu_s": round(cpu, 2),
        "cpu_per_reply_s": round(cpu / done, 4) if done else None,
        "fakes_cpu_s": round(seen.get("fakes_cpu_s", 0.0), 2),
        "params": {"channels": args.channels, "per_channel": args.per_channel, "dms": args.dms,
                   "tokens": args.tokens, "rate": args.rate},
    }  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--channels", type=int, default=20, help="server channels")
    p.add_argument("--per-channel", type=int, default=3, help="people mentioning the bot at once per channel")
    p.add_argument("--dms", type=int, default=20, help="people writing in DMs")
    p.add_argument("--tokens", type=int, default=1500, help="tokens per reply (one SSE chunk each)")
    p.add_argument("--rate", type=float, default=30.0, help="tokens per second per reply")
    p.add_argument("--first-token-delay", type=float, default=0.0, help="provider think time (s)")
    p.add_argument("--seconds-limit", type=float, default=900.0, help="stop waiting after N seconds")
    p.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    result = eventloop.run(run(args), args.loop, switch_interval=eventloop.SWITCH_INTERVAL)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
