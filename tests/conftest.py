"""Shared fixtures for relaybot's own tests (the public kit's fixtures come from its pytest plugin)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from relaybot.testing import FakeOpenAIServer, require_service

#: recorded provider streams (copied from the shared fixtures; see the README there)
FIXTURE_STREAMS = Path(__file__).resolve().parent / "fixtures" / "streams"


@pytest.fixture
def fake_openai_url() -> Iterator[str]:
    """A FakeOpenAIServer in its own thread and loop, for tests that run relaybot as a subprocess."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        async with FakeOpenAIServer() as fake:
            holder["url"] = fake.base_url
            holder["stop"] = stop = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10), "fake server did not start"
    yield str(holder["url"])
    loop: asyncio.AbstractEventLoop = holder["loop"]  # type: ignore[assignment]
    loop.call_soon_threadsafe(holder["stop"].set)  # type: ignore[attr-defined]
    thread.join(5)


PG_ADMIN_DSN = os.environ.get("RELAYBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _async_url(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    try:
        import asyncpg
    except ImportError as exc:
        require_service("PostgreSQL (asyncpg)", exc)
    name = f"relaybot_t_{secrets.token_hex(6)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        shown = make_url(PG_ADMIN_DSN).render_as_string(hide_password=True)
        require_service(f"PostgreSQL at {shown}", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _async_url(PG_ADMIN_DSN, name)
    finally:
        # FORCE: a test that failed mid-way may have left a connection open
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
