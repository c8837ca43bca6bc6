"""SQLite runs on the store's own thread, a whole call per hop (storage/sqlite_worker.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from relaybot.core.contracts.models import ChatKey, ReplyStatus, Role, TextPart
from relaybot.core.storage import NewMessage, Store

CHAT = ChatKey("telegram", "42")


@pytest.fixture
async def sqlite_store(sqlite_url: str):
    store = await Store.open(sqlite_url)
    try:
        yield store
    finally:
        await store.close()


def turn(text: str) -> list[NewMessage]:
    return [
        NewMessage(role=Role.USER, parts=[TextPart(text)]),
        NewMessage(role=Role.ASSISTANT, parts=[TextPart("")], status=ReplyStatus.STREAMING),
    ]


async def test_every_statement_runs_on_one_thread_that_is_not_the_event_loop(sqlite_store: Store):
    threads: set[int] = set()

    def on_sql(*args: object) -> None:
        threads.add(threading.get_ident())

    event.listen(sqlite_store.sql_engine, "before_cursor_execute", on_sql)
    conv = await sqlite_store.create_conversation(CHAT, "")
    user, _ = await sqlite_store.add_messages(conv.id, turn("hello"), title="hello")
    await sqlite_store.path(user.id)
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_store_call_is_one_thread_hop_however_many_statements(sqlite_store: Store, monkeypatch):
    worker = sqlite_store._worker
    assert worker is not None
    hops = 0
    statements = 0
    call = worker.call

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await call(*args, **kwargs)

    def on_sql(*args: object) -> None:
        nonlocal statements
        statements += 1

    monkeypatch.setattr(worker, "call", counted)
    event.listen(sqlite_store.sql_engine, "before_cursor_execute", on_sql)
    conv = await sqlite_store.create_conversation(CHAT, "")  # chat row, conversation, activation
    await sqlite_store.add_messages(conv.id, turn("hello"), platform_message_id="7", title="hello")
    assert hops == 2
    assert statements > 6  # BEGIN, inserts, updates, COMMIT … all in those two hops


async def test_concurrent_calls_keep_their_order(sqlite_store: Store):
    conv = await sqlite_store.create_conversation(CHAT, "")
    rows = await asyncio.gather(
        *(sqlite_store.add_message(conv.id, role=Role.USER, parts=[TextPart(f"m{i}")]) for i in range(50))
    )
    path = await sqlite_store.path(rows[-1].id)
    assert [m.text for m in path] == [f"m{i}" for i in range(50)]  # one chain, in call order


async def test_storage_code_that_suspends_is_refused_with_a_clear_error(sqlite_store: Store):
    async def suspends() -> None:
        await asyncio.sleep(0)

    worker = sqlite_store._worker
    assert worker is not None
    with pytest.raises(RuntimeError, match="awaited something that suspends"):
        await worker.run(suspends)
    assert await sqlite_store.active_conversation(CHAT) is None  # the thread still serves


async def cancel_mid_call(store: Store, text: str, *, fail: bool = False) -> Any:
    """Cancel ``add_messages`` while the SQLite thread is inside it (at its message INSERT,
    which raises when ``fail``); check the caller saw a cancellation and return the active
    conversation as read by the next call, which runs after the cancelled one."""
    conv = await store.create_conversation(CHAT, "")
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()

    def on_sql(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO messages") and not started.is_set():
            loop.call_soon_threadsafe(started.set)
            release.wait(5)  # hold the thread inside the call until the caller is cancelled
            if fail:
                raise RuntimeError("disk on fire")

    event.listen(store.sql_engine, "before_cursor_execute", on_sql)
    try:
        task = asyncio.create_task(store.add_messages(conv.id, turn(text), title="t"))
        await started.wait()
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await store.active_conversation(CHAT)
    finally:
        event.remove(store.sql_engine, "before_cursor_execute", on_sql)


async def test_a_caller_cancelled_mid_call_gets_cancelled_and_the_call_completes(sqlite_store: Store):
    active = await cancel_mid_call(sqlite_store, "kept")
    # the transaction was not cut in half: it committed whole on the thread
    assert active is not None and active.title == "t"
    path = await sqlite_store.path(active.leaf_id)
    assert [m.text for m in path] == ["kept", ""]


async def test_a_failure_nobody_waits_for_any_more_is_logged(sqlite_store: Store, caplog):
    active = await cancel_mid_call(sqlite_store, "lost", fail=True)
    assert active is not None and active.title == ""  # rolled back whole
    await asyncio.sleep(0.05)
    assert "disk on fire" in caplog.text and "cancelled" in caplog.text


async def test_a_closed_store_reopens_its_thread_on_the_next_call(tmp_path: Path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await store.create_conversation(CHAT, "one")
    await store.close()
    await store.close()  # idempotent
    try:
        assert (await store.active_conversation(CHAT)).title == "one"
    finally:
        await store.close()
