"""Discord's rate-limit buckets, learned from the ``X-RateLimit-*`` headers of every response.

The streaming scheduler paces edits and sends per channel by what Discord says rather than by
hard-coded numbers: :class:`BucketTracker` watches discord.py's HTTP traffic through an
``aiohttp.TraceConfig`` — passed with discord.py's documented ``Client(http_trace=...)``
option, so nothing in discord.py is patched — and keeps one :class:`BucketState` per bucket
and major parameter (the channel)::

    tracker = BucketTracker()
    client = discord.Client(intents=intents, http_trace=tracker.trace_config())
    ...
    state = tracker.edits(channel_id)          # None until the first edit answered
    if state is not None and state.available(now) == 0:
        wait = state.wait(now)                  # seconds until the window resets

How responses are folded in:

- **in flight counts**: a request is counted from the moment it is sent (``on_request_start``)
  until its response arrives, so ``available()`` = ``remaining`` minus what is still in flight:
  several streams in one channel never overdraw a bucket between two responses;
- **late answers never loosen the state**: responses in flight together can arrive out of
  order; within one window (the same reset) the lowest ``remaining`` wins, and a response
  whose window ended earlier than the known one is ignored;
- **429s**: ``X-RateLimit-Reset-After`` (or ``Retry-After``) pauses the bucket; a global 429
  (``X-RateLimit-Global``) pauses everything (:attr:`BucketTracker.global_reset_at`).

Buckets are keyed like discord.py and Discord do: routes map to a bucket hash
(``X-RateLimit-Bucket``), state is per (hash, major parameter). The clock is the event loop's
monotonic ``time.monotonic`` unless one is given.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import aiohttp
from yarl import URL

SEND_ROUTE = "POST /channels/{channel_id}/messages"
EDIT_ROUTE = "PATCH /channels/{channel_id}/messages/{message_id}"

# path segment -> name of the id that follows it (Discord's major parameters first)
_NAMED = {"channels": "channel_id", "guilds": "guild_id", "messages": "message_id",
          "webhooks": "webhook_id", "interactions": "interaction_id", "users": "user_id",
          "applications": "application_id", "commands": "command_id"}  # fmt: skip
_TOKEN_AFTER = {"webhook_id": "webhook_token", "interaction_id": "interaction_token"}
_API_PREFIX = re.compile(r"^/api(?:/v\d+)?")
# two responses whose resets differ by less than this belong to the same window
_SAME_WINDOW = 0.25


@dataclass(frozen=True, slots=True)
class BucketState:
    """What Discord last said about one bucket for one major parameter.

    ``reset_at`` is on the tracker's clock; ``in_flight`` counts requests sent and not yet
    answered. A state is immutable: the tracker replaces it on every response.
    """

    bucket: str | None
    route: str
    major: str | None
    limit: int
    remaining: int
    reset_at: float
    in_flight: int = 0

    def available(self, now: float) -> int:
        """Requests that may be sent now without a 429 (the window may have reset already)."""
        if now >= self.reset_at:
            return max(self.limit - self.in_flight, 0)
        return max(self.remaining - self.in_flight, 0)

    def wait(self, now: float) -> float:
        """Seconds until a request fits: 0 when one is available now."""
        return 0.0 if self.available(now) > 0 else max(self.reset_at - now, 0.0)


@dataclass(frozen=True, slots=True)
class RouteKey:
    """A request's route template (``"PATCH /channels/{channel_id}/messages/{message_id}"``)
    and major parameter (the channel, guild, or webhook id + token)."""

    route: str
    major: str | None


def route_key(method: str, url: URL | str) -> RouteKey:
    """The route template and major parameter of a Discord REST URL."""
    path = _API_PREFIX.sub("", URL(str(url)).path)
    parts = [p for p in path.split("/") if p]
    out: list[str] = []
    params: dict[str, str] = {}
    pending: str | None = None
    for part in parts:
        if pending is not None and (part.isdigit() or pending in _TOKEN_AFTER.values()):
            params[pending] = part
            out.append("{" + pending + "}")
            pending = _TOKEN_AFTER.get(pending)
            continue
        pending = None
        out.append(part)
        name = _NAMED.get(part)
        if name is not None:
            pending = name
    template = f"{method.upper()} /" + "/".join(out)
    major = params.get("channel_id") or params.get("guild_id")
    for ident, token in _TOKEN_AFTER.items():
        if major is None and ident in params:
            major = f"{params[ident]}:{params.get(token, '')}"
    return RouteKey(template, major)


class RateLimitedResponse(Exception):
    """A 429 answer to a request made under :meth:`BucketTracker.raising_429s`.

    Raised from the trace before discord.py reads the answer, so discord.py never sleeps and
    retries it: the caller (the streaming scheduler, through the connector) decides when to
    try again. ``retry_after`` is in seconds; ``is_global`` for Discord's global limit;
    ``cloudflare`` when the answer lacks the ``Via`` header (an IP ban, not a bucket).
    """

    def __init__(self, retry_after: float, *, is_global: bool = False, cloudflare: bool = False) -> None:
        super().__init__(f"429, retry after {retry_after:.2f}s" + (" (global)" if is_global else ""))
        self.retry_after = retry_after
        self.is_global = is_global
        self.cloudflare = cloudflare


_raise_429s: ContextVar[bool] = ContextVar("relaybot_discord_raise_429s", default=False)


class BucketTracker:
    """Learns buckets from discord.py's responses; the scheduler asks it before each request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._hash_of_route: dict[str, str] = {}
        self._states: dict[tuple[str, str | None], BucketState] = {}
        self._in_flight: defaultdict[RouteKey, int] = defaultdict(int)
        self.global_reset_at: float = 0.0
        self.rate_limited = 0  # 429s seen (a healthy scheduler keeps this at 0)

    # -- asking ----------------------------------------------------------------------------

    def state(self, route: str, major: str | int | None) -> BucketState | None:
        """The bucket state of ``route`` for ``major`` (None: nothing learned yet)."""
        key = RouteKey(route, None if major is None else str(major))
        found = self._states.get(self._bucket_key(key))
        if found is None:
            return None
        return replace(found, in_flight=self._in_flight.get(key, 0))

    def sends(self, channel_id: str | int) -> BucketState | None:
        """The send bucket of a channel (``POST /channels/{id}/messages``)."""
        return self.state(SEND_ROUTE, channel_id)

    def edits(self, channel_id: str | int) -> BucketState | None:
        """The edit bucket of a channel (``PATCH /channels/{id}/messages/{message_id}``)."""
        return self.state(EDIT_ROUTE, channel_id)

    def in_flight(self, route: str, major: str | int | None) -> int:
        """Requests of ``route`` for ``major`` sent and not answered yet."""
        return self._in_flight.get(RouteKey(route, None if major is None else str(major)), 0)

    @staticmethod
    @contextmanager
    def raising_429s() -> Iterator[None]:
        """Within this block (this task), a 429 answer raises :class:`RateLimitedResponse`
        out of discord.py's request instead of discord.py sleeping and retrying it.

        The streaming scheduler owns pacing: a primitive it calls must report a 429 at once,
        not hold its chat for ``retry_after`` and then send a stale frame. aiohttp awaits the
        trace's ``on_request_end`` inside the request, so the exception leaves discord.py's
        ``HTTPClient.request`` before it looks at the answer (its bucket lock is released as
        for any error). Requests outside the block (start-up, command sync) keep discord.py's
        own handling.
        """
        token = _raise_429s.set(True)
        try:
            yield
        finally:
            _raise_429s.reset(token)

    def global_wait(self) -> float:
        """Seconds left of a global 429 pause (0 when none)."""
        return max(self.global_reset_at - self.clock(), 0.0)

    # -- learning --------------------------------------------------------------------------

    def trace_config(self) -> aiohttp.TraceConfig:
        """An ``aiohttp.TraceConfig`` for ``discord.Client(http_trace=...)``.

        Only REST calls with a Discord path are counted; attachment downloads and the gateway
        handshake pass through the same session and are ignored.
        """
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_start)
        trace.on_request_end.append(self._on_end)
        trace.on_request_exception.append(self._on_exception)
        return trace

    def observe(self, method: str, url: URL | str, status: int, headers: Any) -> BucketState | None:
        """Fold one response into the state (what the trace does; public for other transports)."""
        key = route_key(method, url)
        now = self.clock()
        is_global = _truthy(headers.get("X-RateLimit-Global")) or headers.get("X-RateLimit-Scope") == "global"
        if status == 429 and is_global:
            self.rate_limited += 1
            self.global_reset_at = max(self.global_reset_at, now + _retry_after(headers))
            return None
        if "X-RateLimit-Remaining" not in headers:
            return None
        bucket = headers.get("X-RateLimit-Bucket")
        if bucket:
            self._hash_of_route[key.route] = bucket
        reset_after = _float(headers.get("X-RateLimit-Reset-After"))
        if status == 429:
            self.rate_limited += 1
            reset_after = max(reset_after or 0.0, _retry_after(headers))
        incoming = BucketState(
            bucket=bucket, route=key.route, major=key.major,
            limit=int(_float(headers.get("X-RateLimit-Limit")) or 1),
            remaining=0 if status == 429 else int(_float(headers.get("X-RateLimit-Remaining")) or 0),
            reset_at=now + (reset_after or 0.0),
        )  # fmt: skip
        bucket_key = self._bucket_key(key)
        known = self._states.get(bucket_key)
        if status == 429 and known is not None and known.reset_at > now:
            # a 429 is authoritative: nothing left until the later of the two resets
            merged = replace(known, remaining=0, reset_at=max(known.reset_at, incoming.reset_at))
        else:
            merged = _merge(known, incoming, now)
        self._states[bucket_key] = merged
        return merged

    def _bucket_key(self, key: RouteKey) -> tuple[str, str | None]:
        return (self._hash_of_route.get(key.route, key.route), key.major)

    async def _on_start(
        self, session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        if not _is_rest(params.url):
            return
        key = route_key(params.method, params.url)
        ctx.relaybot_route = key
        self._in_flight[key] += 1

    async def _on_end(
        self, session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        key: RouteKey | None = getattr(ctx, "relaybot_route", None)
        if key is None:
            return
        self._done(ctx, key)
        response = params.response
        headers = response.headers
        self.observe(params.method, params.url, response.status, headers)
        if response.status == 429 and _raise_429s.get():
            is_global = (
                _truthy(headers.get("X-RateLimit-Global")) or headers.get("X-RateLimit-Scope") == "global"
            )
            wait = max(_float(headers.get("Retry-After")) or 0.0, _retry_after(headers))
            body: Any = None
            with contextlib.suppress(Exception):  # the JSON body has the exact retry_after
                body = json.loads(await response.read())
            if isinstance(body, dict):
                wait = _float(body.get("retry_after")) or wait
                is_global = is_global or body.get("global") is True
            response.release()
            cloudflare = not headers.get("Via") or not isinstance(body, dict)
            raise RateLimitedResponse(wait, is_global=is_global, cloudflare=cloudflare)

    async def _on_exception(
        self, session: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        key: RouteKey | None = getattr(ctx, "relaybot_route", None)
        if key is not None:
            self._done(ctx, key)

    def _done(self, ctx: SimpleNamespace, key: RouteKey) -> None:
        ctx.relaybot_route = None  # aiohttp may report a redirect twice: count once
        self._in_flight[key] -= 1
        if self._in_flight[key] <= 0:
            del self._in_flight[key]


def _merge(known: BucketState | None, incoming: BucketState, now: float) -> BucketState:
    """The new state: a later window replaces, the same window keeps the lowest remaining."""
    if known is None or known.reset_at <= now:
        return incoming
    if incoming.reset_at < known.reset_at - _SAME_WINDOW:
        return known  # an answer from a window that already ended, arriving late
    if abs(incoming.reset_at - known.reset_at) <= _SAME_WINDOW:
        return replace(incoming, remaining=min(known.remaining, incoming.remaining),
                       reset_at=max(known.reset_at, incoming.reset_at))  # fmt: skip
    return incoming


def _is_rest(url: URL) -> bool:
    return bool(_API_PREFIX.match(url.path)) and url.scheme in ("http", "https")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _retry_after(headers: Any) -> float:
    return _float(headers.get("X-RateLimit-Reset-After")) or _float(headers.get("Retry-After")) or 1.0


def _truthy(value: Any) -> bool:
    return str(value).lower() == "true"
