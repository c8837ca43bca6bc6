"""Budgets across processes sharing PostgreSQL: two relaybot processes never overshoot together.

Each test spawns two Python subprocesses against one fresh PostgreSQL database (migrated by
the test first). They start, say ``ready``, and act only when the test writes ``go`` to both,
so their requests really do meet in the database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relaybot.core.storage import Store
from relaybot.testing import FakeOpenAIServer

from .conftest import CALL_USD, MAX_OUT, budget_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BOT_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from relaybot.testing import FAST_POLICY, BotHarness, RecordingConnector

    async def main() -> None:
        base_url, database, config, name, count = sys.argv[1:6]
        harness = BotHarness(
            base_url=base_url,
            connector=RecordingConnector(policy=FAST_POLICY),
            database=database,
            plugins=[],
            overrides=json.loads(config),
        )
        await harness.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        chats = [f"{name}-{i}" for i in range(int(count))]
        tasks = [await harness.send("hello", chat=c, user=c, wait=False) for c in chats]
        await asyncio.gather(*tasks)
        texts = ["\\n".join(harness.connector.messages(harness.chat(c))) for c in chats]
        answered = sum(t.startswith("answer") for t in texts)
        refused = sum("This would go over the bot's daily budget" in t for t in texts)
        await harness.stop()
        print(json.dumps({"answered": answered, "refused": refused, "texts": texts}), flush=True)

    asyncio.run(main())
    """
)

CENT_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    from relaybot import BudgetCheck, Shortfall, SpendDraft
    from relaybot.core.storage import Store

    async def main() -> None:
        database, name = sys.argv[1:3]
        store = await Store.open(database)
        since = datetime.now(UTC) - timedelta(days=1)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while (line := await loop.run_in_executor(None, sys.stdin.readline)).strip():
            budget = line.split()[1]
            draft = SpendDraft(platform="p", chat=budget, user_id=name, provider="x", model="m",
                               kind="chat", tokens=1, cost_micros=10_000)
            check = BudgetCheck(key=f"chat:{budget}", column="chat", value=budget, since=since,
                                micros_limit=1_000_000)
            result = await store.reserve_spend(draft, [check], ttl=600)
            print("lost" if isinstance(result, Shortfall) else "won", flush=True)
        await store.close()

    asyncio.run(main())
    """
)


@pytest.fixture
def exact_fake() -> Iterator[str]:
    """A FakeOpenAIServer in its own thread whose 60 queued answers each report MAX_OUT tokens."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with FakeOpenAIServer() as fake:
            for i in range(60):
                fake.add_reply(f"answer {i}", usage=(7, MAX_OUT), tokens_per_second=200)
            holder.update(url=fake.base_url, stop=asyncio.Event(), loop=asyncio.get_running_loop(), fake=fake)
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10), "fake server did not start"
    yield holder["url"]
    holder["loop"].call_soon_threadsafe(holder["stop"].set)
    thread.join(5)


async def spawn(script: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 120)
    assert line, f"child exited early with {await process.wait()}"
    return line.decode().strip()


async def go(processes: list[asyncio.subprocess.Process], line: str = "go\n") -> None:
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(line.encode())
    await asyncio.gather(*(p.stdin.drain() for p in processes if p.stdin is not None))


async def migrated(pg_url: str) -> None:
    """Create the schema once, so the two children do not race to migrate it."""
    store = await Store.open(pg_url)
    await store.close()


async def test_two_processes_fifty_requests_against_a_budget_for_ten(pg_url, exact_fake, tmp_path) -> None:
    await migrated(pg_url)
    script = tmp_path / "bot_child.py"
    script.write_text(BOT_CHILD)
    config = budget_config({"global": {"usd": 10 * CALL_USD, "period": "day"}})
    children = [await spawn(script, exact_fake, pg_url, json.dumps(config), name, "25") for name in "ab"]
    try:
        assert [await read_line(c) for c in children] == ["ready", "ready"]
        await go(children)
        results = [json.loads(await read_line(c)) for c in children]
        assert [await c.wait() for c in children] == [0, 0]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
    answered = sum(r["answered"] for r in results)
    refused = sum(r["refused"] for r in results)
    assert (answered, refused) == (10, 40), results
    store = await Store.open(pg_url)
    try:
        records = await store.list_spend_records()
    finally:
        await store.close()
    assert len(records) == 10 and all(r["state"] == "settled" for r in records)
    assert sum(r["cost_micros"] for r in records) == round(10 * CALL_USD * 1_000_000)


async def test_two_processes_reserving_the_last_cent_exactly_one_wins(pg_url, tmp_path) -> None:
    await migrated(pg_url)
    script = tmp_path / "cent_child.py"
    script.write_text(CENT_CHILD)
    rounds = 20
    # every budget has $0.99 of its $1.00 spent already: room for one more cent
    store = await Store.open(pg_url)
    try:
        from relaybot import SpendDraft

        for n in range(rounds):
            draft = SpendDraft(
                platform="p", chat=f"b{n}", user_id="", provider="x", model="m", kind="chat",
                tokens=1, cost_micros=990_000,
            )  # fmt: skip
            await store.record_spend(draft)
    finally:
        await store.close()
    children = [await spawn(script, pg_url, name) for name in ("one", "two")]
    try:
        assert [await read_line(c) for c in children] == ["ready", "ready"]
        outcomes = []
        for n in range(rounds):
            await go(children, f"go b{n}\n")
            outcomes.append(sorted([await read_line(c) for c in children]))
        await go(children, "\n")
        assert [await c.wait() for c in children] == [0, 0]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
    assert outcomes == [["lost", "won"]] * rounds
