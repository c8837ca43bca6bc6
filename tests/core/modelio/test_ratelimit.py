"""Pre-emptive provider rate limits: the in-process limiter on a manual clock, and Redis for real."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest

from relaybot.core.modelio.ratelimit import LocalRateLimiter, RateLimit, RedisRateLimiter, WindowUsage
from relaybot.testing import require_service


class ManualClock:
    """A clock that only moves when the test says so; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.time = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.time + seconds, next(self._ids), future))
        await future

    async def advance(self, seconds: float) -> None:
        self.time += seconds
        while self._sleepers and self._sleepers[0][0] <= self.time:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_fourth_request_waits_for_the_window(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"openai": RateLimit(rpm=3)}, clock=clock)
    for _ in range(3):
        await limiter.acquire("openai")  # returns at once
    fourth = asyncio.create_task(limiter.acquire("openai"))
    await settle()
    assert not fourth.done()
    await clock.advance(59)
    assert not fourth.done()
    await clock.advance(1.5)  # the first request left the 60 s window
    assert fourth.done()
    # the first three were sent at the same instant and left the window together
    assert await limiter.usage("openai") == WindowUsage(requests=1, tokens=0)


async def test_unlimited_keys_never_wait(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"openai": RateLimit(rpm=1)}, clock=clock)
    for _ in range(50):
        await limiter.acquire("other", tokens=10_000)
    assert await limiter.usage("other") == WindowUsage(0, 0)


async def test_tokens_are_reserved_and_corrected(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"claude": RateLimit(tpm=1000)}, clock=clock)
    await limiter.acquire("claude", tokens=600)
    await limiter.record("claude", -300)  # the reply used 300 tokens, not the 600 reserved
    assert (await limiter.usage("claude")).tokens == 300
    await limiter.acquire("claude", tokens=600)  # 900 of 1000: fits
    blocked = asyncio.create_task(limiter.acquire("claude", tokens=200))
    await settle()
    assert not blocked.done()
    await limiter.record("claude", 50)  # a reply that used more than reserved
    assert (await limiter.usage("claude")).tokens == 950
    await clock.advance(61)
    assert blocked.done()
    assert await limiter.usage("claude") == WindowUsage(1, 200)


async def test_a_request_larger_than_tpm_goes_alone(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"small": RateLimit(tpm=100)}, clock=clock)
    await limiter.acquire("small", tokens=500)  # empty window: let it through rather than hang
    next_one = asyncio.create_task(limiter.acquire("small", tokens=10))
    await settle()
    assert not next_one.done()
    await clock.advance(60)
    assert next_one.done()


async def test_waiters_are_served_in_arrival_order(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"gpt": RateLimit(tpm=1000)}, clock=clock)
    await limiter.acquire("gpt", tokens=900)
    order: list[str] = []

    async def ask(name: str, tokens: int) -> None:
        await limiter.acquire("gpt", tokens=tokens)
        order.append(name)

    big = asyncio.create_task(ask("big", 500))
    await settle()
    small = asyncio.create_task(ask("small", 50))  # would fit right now, but big came first
    await settle()
    assert order == []
    await clock.advance(60)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_cancelled_waiter_reserves_nothing(clock: ManualClock) -> None:
    limiter = LocalRateLimiter({"gpt": RateLimit(rpm=1)}, clock=clock)
    await limiter.acquire("gpt")
    first = asyncio.create_task(limiter.acquire("gpt"))
    second = asyncio.create_task(limiter.acquire("gpt"))
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled() and not second.done()
    await clock.advance(60)
    assert second.done()
    assert (await limiter.usage("gpt")).requests == 1


def test_rate_limit_values_are_checked() -> None:
    with pytest.raises(ValueError):
        RateLimit(rpm=0)
    with pytest.raises(ValueError):
        RateLimit(tpm=-5)
    assert RateLimit().unlimited


# ── Redis, shared by several limiter instances (as several processes would) ────────────────


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - the redis extra is installed in dev
        require_service("redis", exc)
    url = "redis://127.0.0.1:6379/0"
    client = aioredis.from_url(url)
    try:
        async with asyncio.timeout(2):
            await client.ping()
    except Exception as exc:
        await client.aclose()
        require_service("redis", exc)
    yield url
    await client.aclose()


async def pair(url: str, limit: RateLimit) -> tuple[RedisRateLimiter, RedisRateLimiter]:
    # each test its own keys; they expire by themselves a second after their window
    prefix = f"relaybot-test:{uuid.uuid4().hex}:"
    return (
        RedisRateLimiter({"openai": limit}, url=url, prefix=prefix),
        RedisRateLimiter({"openai": limit}, url=url, prefix=prefix),
    )


async def test_redis_window_is_shared_between_instances(redis_url: str) -> None:
    one, two = await pair(redis_url, RateLimit(rpm=2, window=3.0))
    try:
        await one.acquire("openai", tokens=10)
        await one.acquire("openai", tokens=20)
        assert await two.usage("openai") == WindowUsage(2, 30)
        third = asyncio.create_task(two.acquire("openai"))
        await asyncio.sleep(0.3)
        assert not third.done()  # the other instance used the whole budget
        async with asyncio.timeout(15):
            await third  # ...until the first requests leave the 3 s window
        assert (await one.usage("openai")).requests == 1
    finally:
        await one.aclose()
        await two.aclose()


async def test_redis_token_corrections_are_shared(redis_url: str) -> None:
    one, two = await pair(redis_url, RateLimit(tpm=1000))
    try:
        await one.acquire("openai", tokens=600)
        await two.record("openai", -450)  # e.g. the reply used 150 tokens
        assert await one.usage("openai") == WindowUsage(1, 150)
        await two.acquire("openai", tokens=800)  # 950 of 1000
        await one.record("openai", 25)
        assert await two.usage("openai") == WindowUsage(2, 975)
        blocked = asyncio.create_task(one.acquire("openai", tokens=100))
        await asyncio.sleep(0.2)
        assert not blocked.done()  # 60 s window: it stays blocked for the rest of the test
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert (await two.usage("openai")).requests == 2  # the cancelled wait reserved nothing
    finally:
        await one.aclose()
        await two.aclose()
