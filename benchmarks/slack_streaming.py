"""Benchmark: many concurrent streamed replies through the real Slack connector.

Run through ``benchmarks/streaming.py --platform slack`` (or this file directly). A child
process runs the fakes — :class:`~relaybot.testing.FakeSlackServer` with Slack's limits
(method tiers per workspace, ``chat.postMessage`` ~1/s per channel with a burst of 3, the
3-second ack with re-deliveries) and the paced OpenAI server — and this process a real
:class:`~relaybot.core.runtime.app.Relaybot` with the Slack connector in Socket Mode (slack-bolt). It
injects ``--threads`` mentions in one channel (each answered in its own thread) and ``--dms``
DMs from as many people, all at once, waits for every reply and checks that each thread shows
exactly the provider's text, once. ``--lost-acks RATE`` makes the fake lose that share of first
acks, so Slack re-delivers those events while they are being answered: none may be answered
twice.

The last stdout line is one JSON object: replies, identical, duplicates, platform 429s, calls
inside a Retry-After window, re-deliveries, Web API requests per reply (by method), how many
replies streamed natively vs. by post + update, wall time, the bot process's CPU per reply and
peak RSS, reply-end latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _paced_openai import PacedOpenAIServer
from _streaming_fakes import API_KEY, reply_tokens

from relaybot.core.cli import eventloop
from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.hookspecs import hookimpl
from relaybot.core.runtime.app import Relaybot
from relaybot.core.testing.fake_slack import FakeSlackServer


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))], 2)


# -- the fakes (child process) ------------------------------------------------------------------


class SlackWorld:
    """The fake Slack and provider, the injected messages and the read-back of every thread."""

    def __init__(self, threads: int, dms: int, tokens: int, rate: float, lost_acks: float) -> None:
        self.keys = [f"t{i}" for i in range(1, threads + 1)] + [f"d{i}" for i in range(1, dms + 1)]
        self.tokens = tokens
        self.lost_acks = lost_acks
        self.slack = FakeSlackServer()
        self.openai = PacedOpenAIServer(
            api_key=API_KEY, tokens=lambda key: reply_tokens(key, tokens), rate=rate
        )
        self.where: dict[str, tuple[str, str]] = {}  # key -> (channel, thread ts)
        self.deliveries: list[Any] = []

    async def start(self) -> dict[str, str]:
        await self.slack.start()
        await self.openai.start()
        return {"api_url": self.slack.api_url, "bot_token": self.slack.bot_token,
                "app_token": self.slack.app_token, "openai_base_url": self.openai.base_url}  # fmt: skip

    async def stop(self) -> None:
        await self.openai.stop()
        await self.slack.stop()

    def inject(self) -> None:
        if self.lost_acks:
            self.slack.lose_acks(rate=self.lost_acks, seed=13)
        for key in self.keys:
            if key[0] == "t":
                delivery = self.slack.mention(self.slack.general, f"U0T{key[1:]}", f"bench {key}")
            else:
                delivery = self.slack.dm(f"U0D{key[1:]}", f"bench {key}")
            self.deliveries.append(delivery)
            self.where[key] = (delivery.event["channel"], delivery.event["ts"])

    def progress(self) -> dict[str, Any]:
        return {"requests": len(self.slack.timeline), "platform_429": self.slack.count_429}

    def collect(self) -> dict[str, Any]:
        slack = self.slack
        replies: dict[str, Any] = {}
        for key, (channel, ts) in self.where.items():
            messages = slack.replies(channel, ts)
            expected = "".join(reply_tokens(key, self.tokens))
            replies[key] = {
                "identical": slack.thread_text(channel, ts) == expected,
                "messages": len(messages),
                "streamed": any(m.stream is not None for m in messages),
            }
        methods = Counter(c.method for c in slack.timeline)
        return {
            "replies": replies,
            "methods": dict(methods),
            "platform_429": slack.count_429,
            "inside_retry_after": slack.calls_inside_retry_after,
            "redelivered": sum(1 for d in self.deliveries if d.retries),
            "unacked": sum(1 for d in self.deliveries if not d.acked.is_set()),
            "provider_requests": self.openai.requests,
            "fakes_cpu_s": cpu_seconds(),
        }


def serve_in_child(conn: Any, args: tuple[int, int, int, float, float]) -> None:
    asyncio.run(_child_main(conn, args))


async def _child_main(conn: Any, args: tuple[int, int, int, float, float]) -> None:
    world = SlackWorld(*args)
    conn.send(await world.start())
    try:
        while True:
            (command,) = await asyncio.to_thread(conn.recv)
            if command == "inject":
                world.inject()
                conn.send(None)
            elif command == "progress":
                conn.send(world.progress())
            elif command == "collect":
                conn.send(world.collect())
            elif command == "stop":
                break
    finally:
        await world.stop()
        conn.send("stopped")


# -- the bot (this process) ---------------------------------------------------------------------


class ReplyCounter:
    """A plugin: when each reply ended."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()

    @hookimpl
    def after_reply(self, reply: Any) -> None:
        self.done[str(reply.chat)] = time.monotonic()
        if len(self.done) >= self.expected:
            self.all_done.set()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    plan = (args.threads, args.dms, args.tokens, args.rate, args.lost_acks)
    proc = ctx.Process(target=serve_in_child, daemon=True, args=(child, plan))
    proc.start()
    urls = await asyncio.to_thread(conn.recv)

    async def ask(command: str) -> Any:
        conn.send((command,))
        return await asyncio.to_thread(conn.recv)

    expected = args.threads + args.dms
    counter = ReplyCounter(expected)
    tmp = tempfile.TemporaryDirectory(prefix="relaybot-slack-bench-")
    db = Path(tmp.name) / "bench.db"
    provider = {"type": "openai", "base_url": urls["openai_base_url"], "api_key": API_KEY}
    provider["model"] = "gpt-4o-mini"
    # the connector's defaults: Socket Mode, native streams, Slack's tiers
    slack = {"bot_token": urls["bot_token"], "app_token": urls["app_token"], "base_url": urls["api_url"]}
    config = {
        "bot": {"default_provider": "bench", "busy_policy": "queue"},
        "storage": {"url": f"sqlite+aiosqlite:///{db}", "media_dir": str(db.parent / "media")},
        "providers": {"bench": provider},
        "connectors": {"slack": slack},
    }
    app = Relaybot(parse_config(config, "<benchmark>"), extra_plugins=[("bench-counter", counter)])
    await app.start()
    app.token_counter("bench")
    scheduler = app.scheduler("slack")
    log(f"bot up; injecting {args.threads} mentions in one channel + {args.dms} DMs "
        f"({args.tokens} tokens at {args.rate:g}/s each, lost acks {args.lost_acks:.0%})")  # fmt: skip
    cpu_start = cpu_seconds()
    t0 = time.monotonic()
    await ask("inject")
    deadline = t0 + args.seconds_limit
    while not counter.all_done.is_set() and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(counter.all_done.wait(), timeout=5.0)
        except TimeoutError:
            pass
        seen = await ask("progress")
        log(f"t={time.monotonic() - t0:6.1f}s replies {len(counter.done)}/{expected} "
            f"fake saw {seen['requests']} calls, {seen['platform_429']} x 429")  # fmt: skip
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu_start
    ends = sorted(t - t0 for t in counter.done.values())
    await asyncio.sleep(2.0)  # a late re-delivery would show up as a second answer now
    seen = await ask("collect")
    stats = scheduler.stats
    await app.stop(timeout=5.0)
    await ask("stop")
    await asyncio.to_thread(proc.join, 10)
    tmp.cleanup()
    replies = seen["replies"]
    setup = ("auth.test", "apps.connections.open")
    api_calls = sum(n for method, n in seen["methods"].items() if method not in setup)
    return {
        "platform": "slack",
        "threads": args.threads,
        "dms": args.dms,
        "tokens": args.tokens,
        "rate": args.rate,
        "lost_acks": args.lost_acks,
        "replies": len(counter.done),
        "expected": expected,
        "identical": sum(1 for r in replies.values() if r["identical"]),
        "duplicates": sum(1 for r in replies.values() if r["messages"] > 1),
        "provider_requests": seen["provider_requests"],
        "streamed_natively": sum(1 for r in replies.values() if r["streamed"]),
        "platform_429": seen["platform_429"],
        "calls_inside_retry_after": seen["inside_retry_after"],
        "redelivered_events": seen["redelivered"],
        "unacked_events": seen["unacked"],
        "requests_per_reply": round(api_calls / max(1, expected), 2),
        "methods": seen["methods"],
        "starts_short": stats.starts_short,
        "streams_ended": stats.streams_ended,
        "wall_s": round(wall, 1),
        "reply_end_s_p50": percentile(ends, 50),
        "reply_end_s_p95": percentile(ends, 95),
        "reply_end_s_max": percentile(ends, 100),
        "bot_cpu_s": round(cpu, 2),
        "cpu_per_reply_s": round(cpu / max(1, len(counter.done)), 4),
        "bot_rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The Slack run's options (shared with ``streaming.py --platform slack``)."""
    parser.add_argument("--threads", type=int, default=50, help="mentions in one channel, one thread each")
    parser.add_argument("--dms", type=int, default=20, help="DMs from as many people")
    parser.add_argument("--lost-acks", type=float, default=0.0, help="share of first acks the fake loses")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds-limit", type=float, default=600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    result = eventloop.run(run(args), "auto", switch_interval=eventloop.SWITCH_INTERVAL)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
