"""Fixtures for process-level tests: relaybot runs as a real subprocess against a fake server.

``fake_server`` is a :class:`FakeOpenAIServer` in its own thread and event loop (the subprocess
needs it to keep serving while the test blocks on pipes and ptys). Script it from the test with
``fake_server.call(lambda s: s.add_reply(...))``: the call runs on the server's loop, so the
test never touches the server's state from the wrong thread.

``bot`` writes ``relaybot.toml`` in ``tmp_path`` (provider: the fake server; storage: a SQLite
file in ``tmp_path``) and runs ``python -m relaybot.core`` there.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from relaybot.testing import FakeOpenAIServer

T = TypeVar("T")

#: generous: the machine is shared, and a cold interpreter start with plugins takes ~1 s
PROCESS_TIMEOUT = 60.0


@dataclass
class FakeServerHandle:
    """A FakeOpenAIServer running in a background thread."""

    server: FakeOpenAIServer
    loop: asyncio.AbstractEventLoop

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def call(self, fn: Callable[[FakeOpenAIServer], T], timeout: float = 10.0) -> T:
        """Run ``fn(server)`` on the server's loop and return its result."""

        async def run() -> T:
            return fn(self.server)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def add_reply(self, text: str, **kwargs: Any) -> None:
        """Queue one scripted reply (see ``FakeOpenAIServer.add_reply``)."""
        self.call(lambda s: s.add_reply(text, **kwargs))

    def request_count(self) -> int:
        return self.call(lambda s: len(s.requests))


@pytest.fixture
def fake_server() -> Iterator[FakeServerHandle]:
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with FakeOpenAIServer() as fake:
            holder["handle"] = FakeServerHandle(fake, asyncio.get_running_loop())
            holder["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="fake-openai")
    thread.start()
    assert ready.wait(10), "fake server did not start"
    handle: FakeServerHandle = holder["handle"]
    yield handle
    handle.loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(5)


@dataclass
class Bot:
    """A relaybot working folder: config, database, and ways to run the command in it."""

    root: Path
    base_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "relaybot.toml"

    @property
    def db(self) -> Path:
        return self.root / "bot.db"

    def write_config(
        self, extra: str = "", *, provider: str | None = None, storage_url: str | None = None
    ) -> None:
        """``relaybot.toml`` with the fake provider and SQLite storage, plus ``extra`` TOML."""
        provider = provider or (
            f'[providers.fake]\ntype = "openai"\nbase_url = "{self.base_url}"\nmodel = "gpt-4o-mini"\n'
        )
        url = storage_url or f"sqlite+aiosqlite:///{self.db}"
        self.config.write_text(f'[storage]\nurl = "{url}"\n{provider}{extra}', encoding="utf-8")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "relaybot.core", *args]

    def run(
        self, *args: str, input: str = "", timeout: float = PROCESS_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``relaybot ARGS`` to completion with ``input`` on a stdin pipe."""
        return subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=self.env,
        )

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``relaybot ARGS`` (the caller wires stdin/stdout/stderr)."""
        return subprocess.Popen(self.argv(*args), cwd=self.root, env=self.env, **kwargs)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query the bot's database directly (read-only; WAL lets us read beside a writer)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def streaming_text(self) -> str:
        """The checkpointed text of a reply still marked streaming ('' if none yet)."""
        try:
            rows = self.rows("SELECT text FROM messages WHERE role = 'assistant' AND status = 'streaming'")
        except sqlite3.Error:  # the database is not created or not migrated yet
            return ""
        return rows[0][0] if rows and rows[0][0] else ""

    def wait_streaming(self, proc: subprocess.Popen[Any], timeout: float = 30.0) -> str:
        """Wait until ``proc`` has checkpointed part of a streaming reply; return that text."""
        deadline = time.monotonic() + timeout
        while not (text := self.streaming_text()):
            assert proc.poll() is None, f"relaybot exited ({proc.returncode}) before streaming a reply"
            assert time.monotonic() < deadline, "no checkpoint of a streaming reply was written"
            time.sleep(0.1)
        return text

    def messages(self) -> list[tuple[str, str, str]]:
        """Every stored message as ``(role, text, status)``, oldest first."""
        return [(r, t, s) for r, t, s in self.rows("SELECT role, text, status FROM messages ORDER BY id")]


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without relaybot settings that would leak in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOT_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def bot(tmp_path: Path, fake_server: FakeServerHandle) -> Bot:
    b = Bot(tmp_path, fake_server.base_url, clean_env())
    b.write_config()
    return b
