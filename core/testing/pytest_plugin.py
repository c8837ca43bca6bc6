"""pytest plugin of the relaybot testing kit (loaded automatically via the ``pytest11`` entry point).

Fixtures:

- ``fake_openai``: a running :class:`~relaybot.testing.FakeOpenAIServer`;
- ``recording_connector``: a fresh :class:`~relaybot.testing.RecordingConnector` (named "fake",
  no pacing so tests run fast);
- ``make_bot``: an async factory that starts a :class:`~relaybot.testing.BotHarness` — a real
  relaybot on a temporary SQLite database, answering through ``fake_openai`` into
  ``recording_connector``; extra plugins and config overrides are arguments. Stopped at teardown.

Helper: :func:`require_service` skips a test when PostgreSQL/Redis/Chromium is absent, and fails it
instead when ``RELAYBOT_REQUIRE_SERVICES=1`` (as CI sets).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

try:  # async fixtures must work for plugin authors who don't use asyncio_mode=auto
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - the testing extra installs pytest-asyncio
    async_fixture = pytest.fixture  # type: ignore[assignment]

from relaybot.core.contracts.connector import StreamPolicy

# The kit's modules are imported inside the fixtures: this plugin loads in every pytest run of
# a machine where relaybot is installed, and must never break runs that don't use it.

#: a policy without pacing, for fast functional tests (pacing has its own tests)
FAST_POLICY = StreamPolicy(
    max_length=4096, private_interval=0.0, group_interval=0.0, global_rate=0.0, typing_interval=None
)


def require_service(name: str, error: BaseException | str) -> None:
    """Skip (or fail under ``RELAYBOT_REQUIRE_SERVICES=1``) because service ``name`` is missing."""
    reason = f"{name} is not available: {error}"
    if os.environ.get("RELAYBOT_REQUIRE_SERVICES") == "1":
        pytest.fail(reason + " (RELAYBOT_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@async_fixture
async def fake_openai() -> AsyncIterator[Any]:
    """A fake OpenAI-compatible server on loopback (:class:`~relaybot.testing.FakeOpenAIServer`)."""
    from relaybot.core.testing.fake_openai import FakeOpenAIServer

    async with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def recording_connector() -> Any:
    """A :class:`~relaybot.testing.RecordingConnector` named "fake" with no pacing."""
    from relaybot.core.testing.recording_connector import RecordingConnector

    return RecordingConnector(policy=FAST_POLICY)


@async_fixture
async def make_bot(
    tmp_path: Path, fake_openai: Any, recording_connector: Any
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: ``bot = await make_bot(plugins=[("name", module)], config={...})``."""
    from relaybot.core.testing.harness import BotHarness

    harnesses: list[BotHarness] = []

    async def factory(
        *,
        plugins: list[tuple[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        connector: Any = None,
        database: str | None = None,
    ) -> BotHarness:
        harness = BotHarness(
            base_url=fake_openai.base_url,
            connector=connector or recording_connector,
            database=database or f"sqlite+aiosqlite:///{tmp_path / 'relaybot.db'}",
            plugins=plugins or [],
            overrides=config or {},
        )
        await harness.start()
        harnesses.append(harness)
        return harness

    yield factory
    for harness in reversed(harnesses):
        await harness.stop()
