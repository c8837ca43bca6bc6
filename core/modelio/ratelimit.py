"""Provider request and token rate limits (RPM/TPM), waited for *before* a request is sent.

Providers publish limits per minute: requests (RPM) and tokens (TPM, input + output). Sending
faster than that earns 429s, and every 429 costs the user a retry delay. A limiter tracks what
was sent in a sliding window (60 s) per key (the ``[providers.NAME]`` name) and makes callers
wait until a request fits::

    limiter = LocalRateLimiter({"openai": RateLimit(rpm=500, tpm=200_000)})
    await limiter.acquire("openai", tokens=estimated_input + max_output)   # may wait
    ... send the request ...
    await limiter.record("openai", actual_tokens - reserved_tokens)        # correct the guess

Two implementations share :class:`BaseRateLimiter`:

- :class:`LocalRateLimiter` — in-process sliding-window log; waiters for one key are served in
  arrival order (FIFO), so a big request is not starved by a stream of small ones.
- :class:`RedisRateLimiter` — the same window kept in a Redis sorted set and checked and
  updated atomically by a Lua script, so several relaybot processes share one budget (extra
  ``redis``). Within one process waiters are FIFO; across processes they poll, so fairness
  between processes is approximate.

Keys without a configured limit never wait. A single request larger than the whole TPM is let
through once the window is otherwise empty (it could never fit; the provider will say no if it
disagrees).
"""

from __future__ import annotations

import abc
import asyncio
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relaybot.core.contracts.errors import ConfigError

__all__ = [
    "BaseRateLimiter",
    "Clock",
    "LocalRateLimiter",
    "MonotonicClock",
    "RateLimit",
    "RedisRateLimiter",
    "WindowUsage",
]

#: the window providers count RPM/TPM in
DEFAULT_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The budget of one key: at most ``rpm`` requests and ``tpm`` tokens per ``window`` seconds.

    ``None`` means "no limit" for that dimension.
    """

    rpm: int | None = None
    tpm: int | None = None
    window: float = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.rpm is not None and self.rpm < 1:
            raise ValueError("rpm must be at least 1")
        if self.tpm is not None and self.tpm < 1:
            raise ValueError("tpm must be at least 1")
        if self.window <= 0:
            raise ValueError("window must be positive")

    @property
    def unlimited(self) -> bool:
        """True when neither requests nor tokens are limited."""
        return self.rpm is None and self.tpm is None


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """What the current window of a key holds (for status pages, logs and tests)."""

    requests: int
    tokens: int


class Clock(Protocol):
    """Time source of :class:`LocalRateLimiter` (tests pass a manual clock)."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock's scale."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class BaseRateLimiter(abc.ABC):
    """Pre-emptive rate limiting per key (one key per provider).

    Limits are set per key with :meth:`set_limit` (or the constructor); keys without a limit
    pass at once. Implementations must be safe to share between all chats of a process.
    """

    def __init__(self, limits: Mapping[str, RateLimit] | None = None) -> None:
        self._limits: dict[str, RateLimit] = {}
        for key, limit in (limits or {}).items():
            self.set_limit(key, limit)

    def set_limit(self, key: str, limit: RateLimit | None) -> None:
        """Set (or with ``None`` / an unlimited value, remove) the limit of ``key``."""
        if limit is None or limit.unlimited:
            self._limits.pop(key, None)
        else:
            self._limits[key] = limit

    def limit(self, key: str) -> RateLimit | None:
        """The limit of ``key``, or ``None`` when it is unlimited."""
        return self._limits.get(key)

    @abc.abstractmethod
    async def acquire(self, key: str, *, requests: int = 1, tokens: int = 0) -> None:
        """Wait until ``requests`` requests and ``tokens`` tokens fit into ``key``'s window,
        then count them as used (a reservation).

        Must only return once the reservation is recorded. Cancelling the wait reserves
        nothing. Waiters of one key in one process are served in arrival order.
        """

    @abc.abstractmethod
    async def record(self, key: str, tokens: int) -> None:
        """Correct ``key``'s token count by ``tokens`` after the fact.

        Call it with ``actual - reserved`` once the provider reported usage: positive when the
        reply used more than reserved, negative to give back an over-estimate or the tokens of
        a request that failed before the model ran. A negative correction shrinks the newest
        reservations (never below zero), so it frees budget only for as long as they would
        have held it.
        """

    @abc.abstractmethod
    async def usage(self, key: str) -> WindowUsage:
        """Requests and tokens counted in ``key``'s current window."""

    async def aclose(self) -> None:  # noqa: B027 - optional: the local limiter holds nothing
        """Release connections (called once at shutdown)."""


@dataclass(slots=True)
class _Entry:
    at: float
    requests: int
    tokens: int


@dataclass(slots=True)
class _Window:
    entries: deque[_Entry] = field(default_factory=deque)
    # one waiter at a time checks the window: asyncio.Lock queues the others in FIFO order
    # and does not let a newcomer jump ahead of parked waiters.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def prune(self, now: float, window: float) -> None:
        horizon = now - window
        while self.entries and self.entries[0].at <= horizon:
            self.entries.popleft()

    def totals(self) -> tuple[int, int]:
        requests = sum(e.requests for e in self.entries)
        tokens = sum(e.tokens for e in self.entries)
        return requests, max(0, tokens)


def _fits(limit: RateLimit, used_requests: int, used_tokens: int, requests: int, tokens: int) -> bool:
    if limit.rpm is not None and used_requests + requests > limit.rpm:
        return False
    # a request bigger than the whole TPM may go alone, else it would wait forever
    return limit.tpm is None or used_tokens + tokens <= limit.tpm or used_tokens <= 0


class LocalRateLimiter(BaseRateLimiter):
    """In-process sliding-window limiter (exact log of the last ``window`` seconds).

    ``clock`` replaces the time source (tests use a manual one). Memory is one small entry per
    request in the window, per key.
    """

    def __init__(self, limits: Mapping[str, RateLimit] | None = None, *, clock: Clock | None = None) -> None:
        super().__init__(limits)
        self._clock: Clock = clock or MonotonicClock()
        self._windows: dict[str, _Window] = {}

    def _window(self, key: str) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    async def acquire(self, key: str, *, requests: int = 1, tokens: int = 0) -> None:
        limit = self._limits.get(key)
        if limit is None:
            return
        state = self._window(key)
        async with state.lock:
            while True:
                now = self._clock.now()
                state.prune(now, limit.window)
                used_requests, used_tokens = state.totals()
                if _fits(limit, used_requests, used_tokens, requests, tokens):
                    state.entries.append(_Entry(now, requests, tokens))
                    return
                await self._clock.sleep(self._wait_time(state, limit, now, requests, tokens))

    @staticmethod
    def _wait_time(state: _Window, limit: RateLimit, now: float, requests: int, tokens: int) -> float:
        """Seconds until enough of the oldest entries expire for the request to fit."""
        used_requests, used_tokens = state.totals()
        for entry in state.entries:
            used_requests -= entry.requests
            used_tokens -= entry.tokens
            if _fits(limit, used_requests, max(0, used_tokens), requests, tokens):
                return max(entry.at + limit.window - now, 0.001)
        return limit.window  # unreachable with a sane limit; wait a full window to be safe

    async def record(self, key: str, tokens: int) -> None:
        if tokens == 0 or key not in self._limits:
            return
        state = self._window(key)
        if tokens > 0:
            state.entries.append(_Entry(self._clock.now(), 0, tokens))
            return
        give_back = -tokens
        for entry in reversed(state.entries):
            if give_back <= 0:
                break
            take = min(entry.tokens, give_back)
            if take > 0:
                entry.tokens -= take
                give_back -= take

    async def usage(self, key: str) -> WindowUsage:
        limit = self._limits.get(key)
        state = self._windows.get(key)
        if limit is None or state is None:
            return WindowUsage(0, 0)
        state.prune(self._clock.now(), limit.window)
        return WindowUsage(*state.totals())


# Window members are "<id>|<requests>|<tokens>" with the server time (ms) as score. Server time
# (TIME) rather than each process's clock, so hosts with skewed clocks still agree.
_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local function parse(member)
  local id, r, k = string.match(member, '^([^|]*)|(%-?%d+)|(%-?%d+)$')
  return id, tonumber(r or 0), tonumber(k or 0)
end
local function totals(entries)
  local r, k = 0, 0
  for i = 1, #entries, 2 do
    local _, er, ek = parse(entries[i])
    r = r + er
    k = k + ek
  end
  if k < 0 then k = 0 end
  return r, k
end
"""

# ARGV: window_ms, rpm (0 = none), tpm (0 = none), requests, tokens, member id
# returns {granted (0/1), wait_ms}
_ACQUIRE = (
    _PRELUDE
    + """
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local req, tok = tonumber(ARGV[4]), tonumber(ARGV[5])
local function fits(r, k)
  if rpm > 0 and r + req > rpm then return false end
  return tpm == 0 or k + tok <= tpm or k <= 0
end
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used_r, used_k = totals(entries)
if fits(used_r, used_k) then
  redis.call('ZADD', KEYS[1], now, ARGV[6] .. '|' .. req .. '|' .. tok)
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return {1, 0}
end
for i = 1, #entries, 2 do
  local _, er, ek = parse(entries[i])
  used_r = used_r - er
  used_k = used_k - ek
  if used_k < 0 then used_k = 0 end
  if fits(used_r, used_k) then
    return {0, math.max(1, tonumber(entries[i + 1]) + window - now)}
  end
end
return {0, window}
"""
)

# ARGV: window_ms, delta tokens, member id
_RECORD = (
    _PRELUDE
    + """
local delta = tonumber(ARGV[2])
if delta > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[3] .. '|0|' .. delta)
else
  local give = -delta
  local entries = redis.call('ZREVRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    if give <= 0 then break end
    local id, er, ek = parse(entries[i])
    if ek > 0 then
      local take = math.min(ek, give)
      give = give - take
      redis.call('ZREM', KEYS[1], entries[i])
      redis.call('ZADD', KEYS[1], entries[i + 1], id .. '|' .. er .. '|' .. (ek - take))
    end
  end
end
redis.call('PEXPIRE', KEYS[1], window + 1000)
return 1
"""
)

# ARGV: window_ms; returns {requests, tokens}
_USAGE = (
    _PRELUDE
    + """
local r, k = totals(redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'))
return {r, k}
"""
)


class RedisRateLimiter(BaseRateLimiter):
    """A limiter whose windows live in Redis, shared by every process using the same ``prefix``.

    ``client`` is a ``redis.asyncio.Redis`` (or pass ``url``; then the limiter owns and closes
    the client). Each check-and-reserve is one atomic Lua script over a sorted set per key;
    every process must configure the same limits for a key (they all read one config file).
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        client: Any = None,
        prefix: str = "relaybot:ratelimit:",
    ) -> None:
        super().__init__(limits)
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:
                raise ConfigError(
                    "the redis rate limiter needs the redis package: pip install 'relaybot[redis]'",
                    key="ratelimit.backend",
                ) from None
            client = aioredis.from_url(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)
        self._usage = client.register_script(_USAGE)
        # FIFO among this process's waiters; across processes the script decides
        self._locks: dict[str, asyncio.Lock] = {}

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def acquire(self, key: str, *, requests: int = 1, tokens: int = 0) -> None:
        limit = self._limits.get(key)
        if limit is None:
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        member = uuid.uuid4().hex
        window_ms = int(limit.window * 1000)
        async with lock:
            while True:
                granted, wait_ms = await self._acquire(
                    keys=[self._key(key)],
                    args=[window_ms, limit.rpm or 0, limit.tpm or 0, requests, tokens, member],
                )
                if int(granted):
                    return
                # another process may take the slot first: then the script says how long again
                await asyncio.sleep(max(int(wait_ms), 1) / 1000)

    async def record(self, key: str, tokens: int) -> None:
        limit = self._limits.get(key)
        if tokens == 0 or limit is None:
            return
        await self._record(
            keys=[self._key(key)], args=[int(limit.window * 1000), int(tokens), uuid.uuid4().hex]
        )

    async def usage(self, key: str) -> WindowUsage:
        limit = self._limits.get(key)
        if limit is None:
            return WindowUsage(0, 0)
        requests, tokens = await self._usage(keys=[self._key(key)], args=[int(limit.window * 1000)])
        return WindowUsage(int(requests), int(tokens))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
