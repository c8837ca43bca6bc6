"""Storage cost of one reply: the Store calls a new chat's first message makes, timed.

Each simulated reply makes the calls the core makes for a message in a new chat: read the
active conversation, create one, add the user message with the reply's placeholder (and its
platform id and title), read the path for the context, save the final reply, link its platform
id. ``--concurrency`` runs that many replies at once (the 1,000-chat streaming benchmark's
intake), 1 runs them one after another. Prints one JSON object as the last line:
``cpu_ms_per_reply`` (this process, all threads), ``wall_s``, ``statements_per_reply`` and
the mean time of each call in ms.

    .venv/bin/python benchmarks/storage.py                       # SQLite, 1,000 replies, 1 at a time
    .venv/bin/python benchmarks/storage.py --concurrency 1000
    .venv/bin/python benchmarks/storage.py --url postgresql+asyncpg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import tempfile
import time

from sqlalchemy import event

from relaybot.core.cli import eventloop
from relaybot.core.contracts.models import ChatKey, ReplyStatus, Role, TextPart
from relaybot.core.storage import NewMessage, Store

CALLS = ("active", "create", "add", "path", "update", "link")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_reply(store: Store, n: int, run: str, timings: list[tuple[float, ...]]) -> None:
    chat = ChatKey("telegram", f"{run}-{n}")
    marks = [time.perf_counter()]
    await store.active_conversation(chat)
    marks.append(time.perf_counter())
    conversation = await store.create_conversation(chat, "", activate=True)
    marks.append(time.perf_counter())
    user, reply = await store.add_messages(
        conversation.id,
        [
            NewMessage(role=Role.USER, parts=[TextPart(f"bench p{n}")], token_count=3),
            NewMessage(role=Role.ASSISTANT, parts=[TextPart("")], status=ReplyStatus.STREAMING),
        ],
        platform_message_id=str(n),
        title=f"bench p{n}",
    )
    marks.append(time.perf_counter())
    await store.path(user.id, token_budget=100_000)
    marks.append(time.perf_counter())
    await store.update_message(reply.id, text="word " * 400, status=ReplyStatus.COMPLETE, token_count=500)
    marks.append(time.perf_counter())
    await store.link_platform_messages(chat, [str(1_000_000 + n)], reply.id)
    marks.append(time.perf_counter())
    timings.append(tuple(b - a for a, b in itertools.pairwise(marks)))


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        store = await Store.open(url)
        counts = {"statements": 0}

        def on_sql(*args: object) -> None:
            counts["statements"] += 1

        event.listen(store.sql_engine, "before_cursor_execute", on_sql)
        timings: list[tuple[float, ...]] = []
        run_id = str(time.time_ns())
        cpu, wall = cpu_seconds(), time.perf_counter()
        try:
            for start in range(0, args.replies, args.concurrency):
                batch = range(start, min(args.replies, start + args.concurrency))
                await asyncio.gather(*(one_reply(store, n, run_id, timings) for n in batch))
        finally:
            cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
            await store.close()
    n = len(timings)
    return {
        "benchmark": "storage",
        "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
        "replies": n,
        "concurrency": args.concurrency,
        "cpu_ms_per_reply": round(cpu / n * 1000, 2),
        "wall_s": round(wall, 2),
        "statements_per_reply": round(counts["statements"] / n, 1),
        **{f"{name}_ms": round(sum(t[i] for t in timings) / n * 1000, 2) for i, name in enumerate(CALLS)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    print(json.dumps(eventloop.run(run(args))))


if __name__ == "__main__":
    main()
