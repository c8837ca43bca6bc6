"""Database failures reach the caller as StorageError saying what to do, without secrets."""

from __future__ import annotations

import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.models import ChatKey, Role, TextPart
from relaybot.core.storage import Store

CHAT = ChatKey("web", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_path_below_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    db = blocker / "sub" / "bot.db"
    with pytest.raises(StorageError) as info:
        await Store.open(f"sqlite+aiosqlite:///{db}")
    message = str(info.value)
    assert str(blocker / "sub") in message and "[storage] url" in message
    assert "Traceback" not in message


async def test_database_path_is_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "looks-like-a-db"
    target.mkdir()
    with pytest.raises(StorageError) as info:
        await Store.open(f"sqlite+aiosqlite:///{target}")
    message = str(info.value)
    assert str(target) in message and "writable" in message
    assert "[SQL" not in message and "sqlalche.me" not in message


async def test_locked_database_beyond_busy_timeout(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await Store.open(f"sqlite+aiosqlite:///{db}", busy_timeout_ms=200)
    try:
        conv = await store.create_conversation(CHAT, "t")
        other = sqlite3.connect(db, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(StorageError) as info:
                await store.add_message(conv.id, role=Role.USER, parts=[TextPart("blocked")])
            message = str(info.value)
            assert "locked" in message and str(db) in message and "200 ms" in message
            # readers are not blocked (WAL)
            assert await store.active_conversation(CHAT) is not None
            other.execute("ROLLBACK")
        finally:
            other.close()
        # once the lock is gone, writing works again and nothing half-written remains
        msg = await store.add_message(conv.id, role=Role.USER, parts=[TextPart("now")])
        assert [m.text for m in await store.path(msg.id)] == ["now"]
    finally:
        await store.close()


async def test_postgres_connection_refused_names_host_and_hides_password() -> None:
    port = free_port()
    url = f"postgresql+asyncpg://bot:hunter2-secret@127.0.0.1:{port}/relaybot"
    with pytest.raises(StorageError) as info:
        await Store.open(url)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message
    assert "hunter2-secret" not in message


async def test_postgres_unknown_database(pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/relaybot_does_not_exist"
    with pytest.raises(StorageError) as info:
        await Store.open(url)
    assert "does not exist" in str(info.value) and "createdb" in str(info.value)


async def test_missing_asyncpg_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # makes `import asyncpg` fail
    with pytest.raises(StorageError) as info:
        await Store.open("postgresql+asyncpg://bot@127.0.0.1/relaybot")
    assert "relaybot[postgres]" in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a database url", "not a database URL"),
        ("mysql+aiomysql://u:topsecret@h/db", "relaybot supports"),
    ],
)
async def test_unusable_urls(url: str, expected: str) -> None:
    with pytest.raises(StorageError) as info:
        await Store.open(url)
    assert expected in str(info.value) and "topsecret" not in str(info.value)


async def test_vanished_database_file_is_a_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    store = await Store.open(f"sqlite+aiosqlite:///{db}")
    conv = await store.create_conversation(CHAT, "t")
    await store.close()
    db.unlink()
    (tmp_path / "bot.db-wal").unlink(missing_ok=True)
    (tmp_path / "bot.db-shm").unlink(missing_ok=True)
    # the database vanished: the store reconnects, finds no tables, and says so
    try:
        with pytest.raises(StorageError) as info:
            await store.add_message(conv.id, role=Role.USER, parts=[TextPart("x")])
        assert str(db) in str(info.value)
    finally:
        await store.close()  # the failed call opened a new pooled connection
