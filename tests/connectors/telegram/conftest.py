"""Fixtures: a real relaybot with the Telegram connector (PTB) against the fake Bot API.

``make_tg_bot(**telegram_settings)`` starts :class:`~relaybot.core.runtime.app.Relaybot` from a config
whose provider is the fake OpenAI server and whose ``[connectors.telegram]`` points at the fake
Telegram server, so the plugin/config path runs for real. Intervals are small by default to keep
the tests short; the fake's flood control is off unless a test builds its own server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture

TOKEN = "123456:TEST-TOKEN-abcdef"

#: fast pacing for functional tests (the fake's flood control is off for them)
FAST = {"private_interval": 0.05, "group_interval": 0.05, "global_rate": 0, "poll_timeout": 2}


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (generous timeout, no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def texts(tg: FakeTelegramServer, chat_id: int) -> list[str]:
    """The bot's visible messages in a chat."""
    return [m.text for m in tg.messages(chat_id)]


async def wait_text(tg: FakeTelegramServer, chat_id: int, expected: str, timeout: float = 15.0) -> Any:
    """Wait until the bot's message with exactly ``expected`` text is in the chat; return it."""

    def find() -> Any:
        return next((m for m in tg.messages(chat_id) if m.text == expected), None)

    return await wait_until(find, timeout, f"{expected[:40]!r} in chat {chat_id}")


@async_fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    """A fake Bot API with flood control off."""
    async with FakeTelegramServer(token=TOKEN, limits=FloodLimits.disabled()) as server:
        yield server


@async_fixture(params=["aiohttp", "httpx"])
async def make_tg_bot(
    request: pytest.FixtureRequest, tmp_path: Path, fake_openai: Any
) -> AsyncIterator[Callable[..., Awaitable[Relaybot]]]:
    """Factory: ``app = await make_tg_bot(tg, **settings)`` (stopped at teardown).

    Every test using it runs twice: PTB's requests over aiohttp (the default) and over httpx.
    """
    apps: list[Relaybot] = []

    async def factory(
        server: FakeTelegramServer,
        *,
        extra_plugins: list[tuple[str, Any]] | None = None,
        bot: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Relaybot:
        telegram = {
            "token": server.token,
            "base_url": server.bot_base_url,
            "base_file_url": server.file_base_url,
            "http_client": request.param,
            **FAST,
            **settings,
        }
        raw = {
            "bot": {"default_provider": "fake", "checkpoint_interval": 0.2, **(bot or {})},
            "storage": {
                "url": f"sqlite+aiosqlite:///{tmp_path / f'bot{len(apps)}.db'}",
                "media_dir": str(tmp_path / "media"),
            },
            "providers": {
                "fake": {
                    "type": "openai",
                    "base_url": fake_openai.base_url,
                    "api_key": "sk-test-key",
                    "model": "gpt-4o-mini",
                }
            },
            "connectors": {"telegram": telegram},
        }
        app = Relaybot(parse_config(raw, "<test>"), extra_plugins=extra_plugins or [])
        apps.append(app)
        await app.start()
        return app

    yield factory
    for app in reversed(apps):
        if app.started:
            await app.stop()
