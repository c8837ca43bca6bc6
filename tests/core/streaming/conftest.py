"""Shared helpers for the streaming tests: a fake platform plus a scheduler on top of it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from relaybot.core.contracts.connector import StreamPolicy
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming import StreamScheduler
from relaybot.core.testing.recording_connector import RecordingConnector

INTERVAL = 0.05
DM = ChatKey("fake", "dm1")
DM2 = ChatKey("fake", "dm2")
GROUP = ChatKey("fake", "g1")


def policy(**overrides: Any) -> StreamPolicy:
    """A fast policy for tests: 50 ms between requests per chat, no global cap."""
    base: dict[str, Any] = {
        "max_length": 4096,
        "private_interval": INTERVAL,
        "group_interval": INTERVAL,
        "global_rate": 0,
        "typing_interval": None,
    }
    base.update(overrides)
    return StreamPolicy(**base)


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``condition()`` holds (checked every few ms), or fail the test."""
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


def request_ops(conn: RecordingConnector, chat: ChatKey) -> list[Any]:
    """Accepted message requests (send/edit/draft) into ``chat``, typing left out."""
    return [op for op in conn.ops(chat) if op.op in ("send", "edit", "draft")]


def assert_spacing(conn: RecordingConnector, chat: ChatKey, interval: float = INTERVAL) -> None:
    """Consecutive requests into ``chat`` are at least ``interval`` apart (small tolerance)."""
    times = [op.t for op in request_ops(conn, chat)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= interval - 0.005 for gap in gaps), gaps


class Rig:
    """A RecordingConnector and a StreamScheduler built on it, closed after the test.

    Test modules cannot import this conftest (pytest runs with ``--import-mode=importlib``),
    so the helpers are reachable through the fixture: ``rig.policy()``, ``rig.wait_until()``,
    ``rig.requests()``, ``rig.assert_spacing()``.
    """

    policy = staticmethod(policy)
    wait_until = staticmethod(wait_until)

    def __init__(self) -> None:
        self.conn: RecordingConnector | None = None
        self.sched: StreamScheduler | None = None

    def __call__(
        self, pol: StreamPolicy | None = None, *, sched_kw: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[RecordingConnector, StreamScheduler]:
        self.conn = RecordingConnector(pol or policy(), groups=[GROUP.chat], **kw)
        self.sched = StreamScheduler(self.conn, retry_backoff=0.01, **(sched_kw or {}))
        return self.conn, self.sched

    @staticmethod
    def requests(conn: RecordingConnector, chat: ChatKey) -> list[Any]:
        return request_ops(conn, chat)

    @staticmethod
    def assert_spacing(conn: RecordingConnector, chat: ChatKey, interval: float = INTERVAL) -> None:
        assert_spacing(conn, chat, interval)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    if r.sched is not None:
        await r.sched.aclose(timeout=1)
