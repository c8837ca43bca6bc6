"""Benchmark: many concurrent streamed replies through the real Telegram connector.

Self-contained: it starts the fake Telegram Bot API (Telegram's flood limits: ~1 msg/s per chat
with a burst of 3, 20/min per group, 30/s overall, escalating ``retry_after``) and a fake
OpenAI server that streams every answer at ``--rate`` tokens/s, then a real
:class:`~relaybot.core.runtime.app.Relaybot` with the Telegram connector (python-telegram-bot, long
polling, the connector's default policy) against them. It injects ``--chats`` private messages
and ``--group-streams`` messages into as many forum topics of one supergroup (one writer per
ChatKey; all topics share the group's budget), waits for every reply and checks that each
chat finally shows exactly the provider's text (joined across split messages).

Run (from the repository root)::

    .venv/bin/python benchmarks/streaming.py                      # 200 private + 50 topics
    .venv/bin/python benchmarks/streaming.py --chats 1000 --group-streams 0
    .venv/bin/python benchmarks/streaming.py --chats 0 --group-streams 0 --group-users 3
    .venv/bin/python benchmarks/streaming.py --no-coalesce --seconds-limit 120
    .venv/bin/python benchmarks/streaming.py --platform discord   # see discord_streaming.py
    .venv/bin/python benchmarks/streaming.py --platform slack [--lost-acks 0.2]  # slack_streaming.py

Progress goes to stderr; the last stdout line is one JSON object. See ``benchmarks/README.md``
for what each field means and how the latency figures are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _streaming_fakes import API_KEY, TOKEN, FakeWorld, Plan, cpu_seconds, reply_tokens, serve_in_child

from relaybot.core.cli import eventloop
from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.hookspecs import hookimpl
from relaybot.core.runtime.app import Relaybot
from relaybot.core.streaming import FrameTrace


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``None`` for no samples)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- the fakes, here or in a child process ------------------------------------------------------


class Fakes:
    """Same calls whether the fakes run in this process or in a child."""

    def __init__(self, plan: Plan, *, separate: bool) -> None:
        self.plan = plan
        self.separate = separate
        self._world: FakeWorld | None = None
        self._conn: Any = None
        self._proc: Any = None

    async def start(self) -> dict[str, str]:
        if not self.separate:
            self._world = FakeWorld(self.plan)
            return await self._world.start()
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=serve_in_child, args=(child, self.plan), daemon=True)
        self._proc.start()
        return await asyncio.to_thread(self._conn.recv)

    async def _ask(self, command: str) -> Any:
        self._conn.send((command,))
        return await asyncio.to_thread(self._conn.recv)

    async def inject(self) -> None:
        if self._world is not None:
            self._world.inject()
        else:
            await self._ask("inject")

    async def progress(self) -> dict[str, Any]:
        return self._world.progress() if self._world is not None else await self._ask("progress")

    async def collect(self) -> dict[str, Any]:
        if self._world is not None:
            return self._world.collect()
        return await self._ask("collect")

    async def stop(self) -> None:
        if self._world is not None:
            await self._world.stop()
        elif self._proc is not None:
            await self._ask("stop")
            await asyncio.to_thread(self._proc.join, 10)


# -- the bot side -------------------------------------------------------------------------------


class ReplyCounter:
    """A plugin: records when each reply ended and the provider text it carried."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done: dict[str, tuple[float, str, str]] = {}
        self.all_done = asyncio.Event()

    @hookimpl
    def after_reply(self, reply: Any) -> None:
        if reply.chat.thread:
            key = f"g{reply.chat.thread}"
        elif reply.chat.chat.startswith("-"):
            key = f"u{int(reply.user_id) - 200_000}"  # a person in the group itself
        else:
            key = f"p{reply.chat.chat}"
        self.done[key] = (time.monotonic(), reply.text, str(reply.status))
        if len(self.done) >= self.expected:
            self.all_done.set()


def bot_config(urls: dict[str, str], db: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bot": {"default_provider": "bench", "busy_policy": "queue"},
        "storage": {"url": f"sqlite+aiosqlite:///{db}", "media_dir": str(db.parent / "media")},
        "providers": {
            "bench": {
                "type": "openai",
                "base_url": urls["openai_base_url"],
                "api_key": API_KEY,
                "model": "gpt-4o-mini",
            }
        },
        # the connector's defaults: long polling, drafts in private chats, Telegram's limits
        "connectors": {
            "telegram": {
                "token": TOKEN,
                "base_url": urls["bot_base_url"],
                "base_file_url": urls["file_base_url"],
            }
        },
    }


class Sampler:
    """Samples this process's CPU and RSS once a second (for core usage and memory peaks)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (t, cpu_s, rss_mb)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), cpu_seconds(), rss_now_mb()))
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.samples.append((time.monotonic(), cpu_seconds(), rss_now_mb()))

    def cores_between(self, start: float, end: float) -> float | None:
        """Average CPU use (in cores) between two ``time.monotonic()`` instants (≥ 2 s apart)."""
        inside = [x for x in self.samples if start <= x[0] <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 2.0:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def peak_cores(self, window: int = 5) -> float | None:
        """Highest CPU use (in cores) over any ``window`` consecutive seconds."""
        s = self.samples
        best = None
        for i in range(len(s) - window):
            cores = (s[i + window][1] - s[i][1]) / (s[i + window][0] - s[i][0])
            best = cores if best is None else max(best, cores)
        return best


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan(
        args.chats, args.group_streams, args.tokens, args.rate, args.first_token_delay, args.ramp,
        group_users=args.group_users,
    )  # fmt: skip
    expected = args.chats + args.group_streams + args.group_users
    fakes = Fakes(plan, separate=not args.fakes_in_process)
    urls = await fakes.start()
    log(f"fakes up ({'separate process' if fakes.separate else 'in process'}): {urls['bot_base_url']}")

    traces: list[FrameTrace] = []
    counter = ReplyCounter(expected)
    tmp = tempfile.TemporaryDirectory(prefix="relaybot-bench-")
    app = Relaybot(
        parse_config(bot_config(urls, Path(tmp.name) / "bench.db", args), "<benchmark>"),
        extra_plugins=[("bench-counter", counter)],
    )
    await app.start()
    # Warm-up: the tokenizer loads lazily on the first message (~100-200 ms of blocked event
    # loop); a bot that has been running has it loaded. (The core could load it at start.)
    app.token_counter("bench")
    scheduler = app.scheduler("telegram")
    scheduler.trace = traces.append  # list.append: the cheapest possible hook
    scheduler.coalesce = not args.no_coalesce
    log(
        f"bot up; injecting {args.chats} private messages + {args.group_streams} topic messages "
        f"+ {args.group_users} people at once in the group "
        f"({args.tokens} tokens at {args.rate:g}/s each, coalescing {'off' if args.no_coalesce else 'on'})"
    )

    gc.collect()
    sampler = Sampler()
    sampler.start()
    cpu_start = cpu_seconds()
    t0 = time.monotonic()
    await fakes.inject()
    deadline = t0 + args.seconds_limit
    timed_out = False
    while not counter.all_done.is_set():
        try:
            await asyncio.wait_for(
                counter.all_done.wait(), timeout=min(5.0, max(0.01, deadline - time.monotonic()))
            )
        except TimeoutError:
            pass
        seen = await fakes.progress()
        log(
            f"t={time.monotonic() - t0:6.1f}s replies {len(counter.done)}/{expected} "
            f"requests {scheduler.stats.requests} (coalesced deltas {scheduler.stats.coalesced}) "
            f"fake saw {seen['requests']} calls, {seen['platform_429']} x 429, "
            f"cpu {cpu_seconds() - cpu_start:.1f}s rss {rss_now_mb():.0f} MB"
        )
        if time.monotonic() >= deadline and not counter.all_done.is_set():
            timed_out = True
            log(f"time limit of {args.seconds_limit:g}s reached; reporting what completed")
            break
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu_start
    # replies finished in time (stopping the bot below ends the others as undelivered)
    finished_in_time = set(counter.done)
    sampler.stop()
    peak_rss = rss_peak_mb()
    stats = scheduler.stats
    await asyncio.sleep(0.5)  # let the fake record the last responses
    seen = await fakes.collect()
    log("stopping the bot")
    await app.stop(timeout=5.0)
    counter.done = {k: v for k, v in counter.done.items() if k in finished_in_time}
    await fakes.stop()
    tmp.cleanup()
    return summarize(
        args, plan, counter, traces, seen, stats, wall, cpu, peak_rss, sampler, timed_out, fakes.separate
    )


def summarize(
    args: argparse.Namespace, plan: Plan, counter: ReplyCounter, traces: list[FrameTrace],
    seen: dict[str, Any], stats: Any, wall: float, cpu: float, peak_rss: float, sampler: Sampler,
    timed_out: bool, separate: bool,
) -> dict[str, Any]:  # fmt: skip
    replies = seen["replies"]
    expected = len(replies)
    provider_ok = sum(
        1 for key, (_, text, _) in counter.done.items()
        if text == "".join(reply_tokens(key, plan.tokens))
    )  # fmt: skip
    completed = [k for k in replies if k in counter.done]
    identical = [k for k in completed if replies[k]["identical"]]

    # Latency the scheduler added (see README): frames that carry provider text and were
    # accepted; "unpaced" = the budget allowed the request before the text existed.
    unpaced, paced, request_ms = [], [], []
    for tr in traces:
        if tr.outcome not in ("ok", "not_modified"):
            continue
        request_ms.append((tr.done_at - tr.issued_at) * 1000)
        if not tr.text_at:
            continue
        if tr.allowed_at <= tr.text_at:
            unpaced.append((tr.issued_at - tr.text_at) * 1000)
        else:
            paced.append((tr.issued_at - tr.allowed_at) * 1000)

    def group(prefix: str) -> dict[str, Any]:
        keys = [k for k in replies if k.startswith(prefix)]
        if not keys:
            return {}
        done = [k for k in keys if k in counter.done]
        feedback = [replies[k]["feedback_ms"] for k in keys if replies[k]["feedback_ms"] is not None]
        last = [replies[k]["last_frame_at"] - replies[k]["injected"]
                for k in done if replies[k]["last_frame_at"] is not None]  # fmt: skip
        return {
            "replies_expected": len(keys),
            "replies_completed": len(done),
            "identical": sum(1 for k in done if replies[k]["identical"]),
            "first_feedback_ms_p50": rnd(percentile(feedback, 50), 1),
            "first_feedback_ms_p99": rnd(percentile(feedback, 99), 1),
            "no_feedback": len(keys) - len(feedback),
            "edits_per_reply": rnd(statistics.fmean(replies[k]["requests"] for k in keys), 2),
            "drafts_per_reply": rnd(statistics.fmean(replies[k]["drafts"] for k in keys), 2),
            "typing_per_reply": rnd(statistics.fmean(replies[k]["typing"] for k in keys), 2),
            "messages_per_reply": rnd(statistics.fmean(replies[k]["messages"] for k in done), 2)
            if done
            else None,
            "reply_done_s_p50": rnd(percentile(last, 50), 1),
            "reply_done_s_max": rnd(max(last, default=None), 1),
            "platform_429": sum(replies[k]["rate_limited"] for k in keys),
        }

    # The provider streams as the fake sent them: how long each took (ideal: tokens / rate),
    # how many ran at once, and the bot's CPU while all of them were running.
    spans = seen.get("provider_spans", [])
    durations = [end - start for start, end in spans]
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak_streams = 0
    for _, step in edges:
        running += step
        peak_streams = max(peak_streams, running)
    all_streaming = None
    if spans and len(spans) == expected:
        last_start, first_end = max(s for s, _ in spans), min(e for _, e in spans)
        if first_end > last_start:
            all_streaming = (last_start, first_end)

    feedback_all = [r["feedback_ms"] for r in replies.values() if r["feedback_ms"] is not None]
    missing_feedback = sum(1 for r in replies.values() if r["feedback_ms"] is None)
    result: dict[str, Any] = {
        "benchmark": "streaming",
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "concurrent": expected,
        "chats": plan.chats,
        "group_streams": plan.topics,
        "tokens": plan.tokens,
        "rate": plan.rate,
        "coalesce": not args.no_coalesce,
        "fakes": "separate process" if separate else "in process",
        "overhead_ms_p50": rnd(percentile(unpaced, 50)),
        "overhead_ms_p99": rnd(percentile(unpaced, 99)),
        "overhead_ms_max": rnd(max(unpaced, default=None)),
        "overhead_frames": len(unpaced),
        "paced_overhead_ms_p50": rnd(percentile(paced, 50)),
        "paced_overhead_ms_p99": rnd(percentile(paced, 99)),
        "paced_frames": len(paced),
        "request_ms_p50": rnd(percentile(request_ms, 50), 2),
        "request_ms_p99": rnd(percentile(request_ms, 99), 2),
        # a reply with no feedback at all counts as infinitely late
        "first_feedback_ms_p50": rnd(percentile(feedback_all + [float("inf")] * missing_feedback, 50), 1),
        "first_feedback_ms_p99": rnd(percentile(feedback_all + [float("inf")] * missing_feedback, 99), 1),
        "platform_429": seen["platform_429"],
        "platform_429_rules": seen.get("platform_429_rules", {}),
        "platform_errors": seen["platform_errors"],
        "edits_per_reply": rnd(statistics.fmean(r["requests"] for r in replies.values()), 2),
        "coalesced_deltas": stats.coalesced,
        "scheduler_requests": stats.requests,
        "scheduler_rate_limited": stats.rate_limited,
        "reads_woken": stats.reads_woken,
        "cpu_s": rnd(cpu, 2),
        "cpu_s_per_reply": rnd(cpu / max(1, len(completed)), 4),
        "cpu_cores_avg": rnd(cpu / wall, 2),
        "cpu_cores_peak_5s": rnd(sampler.peak_cores(), 2),
        # while every provider stream was running at once (None: they never all overlapped)
        "cpu_cores_all_streaming": rnd(sampler.cores_between(*all_streaming), 2) if all_streaming else None,
        "all_streaming_s": rnd(all_streaming[1] - all_streaming[0], 1) if all_streaming else None,
        "provider_streams_peak": peak_streams,
        "provider_stream_s_p50": rnd(percentile(durations, 50), 1),
        "provider_stream_s_max": rnd(max(durations, default=None), 1),
        "rss_mb": rnd(peak_rss, 1),
        "replies_completed": len(completed),
        "replies_expected": expected,
        "identical": len(identical) == expected,
        "identical_count": len(identical),
        "provider_text_ok": provider_ok,
        "wall_s": rnd(wall, 1),
        "timed_out": timed_out,
        "private": group("p"),
        "group": group("g"),
    }
    if plan.group_users:
        # one shared chat, everyone at once: per person, seconds from the question to the first
        # visible text and to the complete answer (in the order they asked)
        people = [k for k in replies if k.startswith("u")]
        result["group_users"] = {
            **group("u"),
            "first_text_s": [
                rnd(replies[k]["first_text_at"] - replies[k]["injected"], 2)
                if replies[k]["first_text_at"] is not None else None
                for k in people
            ],
            "complete_s": [
                rnd(replies[k]["last_frame_at"] - replies[k]["injected"], 2)
                if replies[k]["last_frame_at"] is not None and k in counter.done else None
                for k in people
            ],
        }  # fmt: skip
    if separate:
        result["fakes_cpu_s"] = rnd(seen.get("fakes_cpu_s"), 2)
        result["fakes_rss_mb"] = rnd(seen.get("fakes_rss_mb"), 1)
    return result


def main() -> None:
    platform = argparse.ArgumentParser(add_help=False)
    platform.add_argument("--platform", choices=["telegram", "slack", "discord"], default="telegram")
    chosen, rest = platform.parse_known_args()
    if chosen.platform == "slack":  # its own run: see benchmarks/slack_streaming.py
        import slack_streaming

        slack_streaming.main(rest)
        return
    if chosen.platform == "discord":  # its own run: see benchmarks/discord_streaming.py
        from discord_streaming import main as discord_main

        discord_main(rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", choices=["telegram", "slack", "discord"], default="telegram")
    parser.add_argument("--chats", type=int, default=200, help="private chats, one reply each")
    parser.add_argument(
        "--group-streams", type=int, default=50, help="forum topics of one group, one reply each"
    )
    parser.add_argument(
        "--group-users", type=int, default=0,
        help="people mentioning the bot at the same moment in the group itself (one shared chat)",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=500, help="tokens per reply (one SSE chunk each)")
    parser.add_argument("--rate", type=float, default=30.0, help="tokens per second per reply")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="provider think time (s)")
    parser.add_argument("--ramp", type=float, default=0.0, help="spread the messages over N seconds")
    parser.add_argument("--no-coalesce", action="store_true", help="one frame per delta (to compare)")
    parser.add_argument("--seconds-limit", type=float, default=600.0, help="stop waiting after N seconds")
    parser.add_argument(
        "--fakes-in-process",
        action="store_true",
        help="run the fake servers in the bot's process (CPU then includes them)",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the bot process into FILE")
    parser.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="the bot process's event loop (auto: uvloop when installed, as `relaybot run` does)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="GIL switch interval of the bot process in seconds (default: relaybot's, 0.0005)",
    )
    args = parser.parse_args()
    switch = args.switch_interval or eventloop.SWITCH_INTERVAL
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("relaybot.core.streaming").setLevel(
        logging.ERROR if args.no_coalesce else logging.WARNING
    )
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(eventloop.run, run(args), args.loop, switch_interval=switch)
        profiler.dump_stats(args.profile)
        log(f"profile of the bot process written to {args.profile} (python -m pstats)")
    else:
        result = eventloop.run(run(args), args.loop, switch_interval=switch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
