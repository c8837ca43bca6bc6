"""Overhead of the budget reservation path per reply: reserve before the call, settle after it.

Runs the budgets plugin's real guard on a real store (no provider, no platform: the provider
call itself is not what is measured). Each simulated reply reserves its worst case against a
user, a chat and a global budget (``--budgets 3``; limits high enough never to refuse) and
settles to its real usage; ``--budgets 0`` measures the path with no budget configured (only
the cost is recorded, once). ``--concurrency`` replies run at once, spread over ``--chats``
chats of ``--users`` users (one untimed round first gives each its budget lock row on
PostgreSQL, as a chat's first reply does). ``--prefill`` settled records are written first,
so the budget sums run over a realistic history. Prints one JSON object as the last line:
``overhead_ms_p50`` / ``overhead_ms_p99`` (reserve + settle per reply, wall time), the same for each step,
``statements_per_reply`` and ``cpu_ms_per_reply``. On PostgreSQL it works in a throwaway
database created beside the one ``--url`` names (and dropped afterwards), never in that one.

    .venv/bin/python benchmarks/budgets.py                                # SQLite
    .venv/bin/python benchmarks/budgets.py --url postgresql+asyncpg://postgres@127.0.0.1/test
    .venv/bin/python benchmarks/budgets.py --concurrency 50 --budgets 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import secrets
import statistics
import tempfile
import time
from typing import Any

from sqlalchemy import event

from relaybot import (
    CallOutcome,
    ChatKey,
    ChatMessage,
    PlannedCall,
    ProviderRequest,
    RequestOrigin,
    Role,
    Usage,
)
from relaybot.core.cli import eventloop
from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
from relaybot.core.storage import SpendDraft


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def config(url: str, budgets: int) -> dict[str, Any]:
    section: dict[str, Any] = {}
    if budgets >= 1:
        section["user"] = {"usd": 1_000, "period": "day"}
    if budgets >= 2:
        section["chat"] = {"tokens": 10**11, "period": "month"}
    if budgets >= 3:
        section["global"] = {"usd": 100_000, "period": "month"}
    return {
        "storage": {"url": url},
        "providers": {"openai": {"type": "openai", "api_key": "sk-bench", "model": "gpt-4o-mini"}},
        "connectors": {},
        "plugins": {"budgets": section},
    }


async def one_reply(guard: Any, n: int, args: argparse.Namespace, timings: list[tuple[float, float]]) -> None:
    origin = RequestOrigin(ChatKey("telegram", f"c{n % args.chats}"), f"u{n % args.users}")
    request = ProviderRequest(
        "You are a helpful assistant.", [ChatMessage.text(Role.USER, f"question {n}")], input_tokens=500
    )
    call = PlannedCall(
        provider="openai",
        model="gpt-4o-mini",
        kind="chat",
        origin=origin,
        request=request,
        max_output_tokens=1024,
    )
    start = time.perf_counter()
    reservation = await guard.reserve(call)
    reserved = time.perf_counter()
    await guard.settle(reservation, CallOutcome(usage=Usage(500, 300)))
    timings.append((reserved - start, time.perf_counter() - reserved))


async def prefill(app: Relaybot, count: int, users: int) -> None:
    for i in range(count):
        await app.store.record_spend(
            SpendDraft(
                platform="telegram", chat=f"telegram:old-{i}", user_id=f"telegram:u{i % users}",
                provider="openai", model="gpt-4o-mini", kind="chat", tokens=800, cost_micros=255,
                input_tokens=500, output_tokens=300,
            )
        )  # fmt: skip


@contextlib.asynccontextmanager
async def throwaway_database(url: str) -> Any:
    """A fresh PostgreSQL database next to ``url``'s (dropped at the end); SQLite: ``url``."""
    if not url.startswith("postgresql"):
        yield url
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    admin_url = make_url(url).set(drivername="postgresql")
    name = f"relaybot_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        async with throwaway_database(args.url or f"sqlite+aiosqlite:///{tmp}/bench.db") as url:
            return await measure(args, url)


async def measure(args: argparse.Namespace, url: str) -> dict[str, object]:
    app = Relaybot(parse_config(config(url, args.budgets), "<bench>"), load_entrypoints=True)
    await app.start(start_configured=False)
    try:
        await prefill(app, args.prefill, args.users)
        guard = app.spend_guard
        # warm-up, untimed: every chat's and user's first reply (lock rows, prepared statements)
        await asyncio.gather(*(one_reply(guard, n, args, []) for n in range(max(args.chats, args.users))))
        counts = {"statements": 0}

        def on_sql(*_: object) -> None:
            counts["statements"] += 1

        event.listen(app.store.sql_engine, "before_cursor_execute", on_sql)
        timings: list[tuple[float, float]] = []
        cpu, wall = cpu_seconds(), time.perf_counter()
        for start in range(0, args.replies, args.concurrency):
            batch = range(start, min(args.replies, start + args.concurrency))
            await asyncio.gather(*(one_reply(guard, n, args, timings) for n in batch))
        wall = time.perf_counter() - wall
        cpu = cpu_seconds() - cpu
        backend = app.store.backend
    finally:
        await app.stop()
    total = [1000 * (r + s) for r, s in timings]
    reserve = [1000 * r for r, _ in timings]
    settle = [1000 * s for _, s in timings]
    return {
        "backend": backend,
        "budgets": args.budgets,
        "concurrent": args.concurrency,
        "replies": len(timings),
        "prefill": args.prefill,
        "overhead_ms_p50": round(statistics.median(total), 3),
        "overhead_ms_p99": round(percentile(total, 0.99), 3),
        "reserve_ms_p50": round(statistics.median(reserve), 3),
        "reserve_ms_p99": round(percentile(reserve, 0.99), 3),
        "settle_ms_p50": round(statistics.median(settle), 3),
        "settle_ms_p99": round(percentile(settle, 0.99), 3),
        "statements_per_reply": round(counts["statements"] / len(timings), 2),
        "cpu_ms_per_reply": round(1000 * cpu / len(timings), 3),
        "wall_s": round(wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--budgets", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--prefill", type=int, default=10_000, help="settled records written first")
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    print(json.dumps(eventloop.run(run(args))))


if __name__ == "__main__":
    main()
