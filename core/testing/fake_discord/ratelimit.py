"""Discord's rate limits as the fake enforces them: per-route buckets, the global limit, bans.

- A **bucket** is a route group (``send``, ``edit`` ...) times its major parameter (the
  channel): a fixed window that opens on the first request, allows ``limit`` requests and
  resets ``per`` seconds later. Every answer carries ``X-RateLimit-Limit``, ``-Remaining``,
  ``-Reset`` (epoch seconds), ``-Reset-After`` and ``-Bucket`` (a stable hash per group, the
  same for every channel, as on Discord); a 429 adds ``-Scope``, ``Retry-After`` and ``Via``.
- The **global** limit counts every request of the bot (interaction callbacks excepted, as on
  Discord) in one-second windows.
- **Invalid requests** (401, 403, 429 except ``shared`` scope) are counted over a sliding 10
  minutes; at ``ban_threshold`` the "IP" is banned: every answer is Cloudflare's HTML 429
  (no ``Via``), which discord.py raises at once. Tests assert "no retry storm" on the count.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketLimit:
    """``limit`` requests per ``per`` seconds."""

    limit: int
    per: float


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The fake's limits; None turns one off. ``RateLimits.disabled()`` turns all off.

    Defaults follow what Discord is observed to do: 5 sends and 5 edits per 5 s per channel
    (the edit limit is undocumented), 5 deletes per second, 50 requests per second globally,
    a ban after 10,000 invalid requests in 10 minutes.
    """

    send: BucketLimit | None = BucketLimit(5, 5.0)
    edit: BucketLimit | None = BucketLimit(5, 5.0)
    delete: BucketLimit | None = BucketLimit(5, 1.0)
    typing: BucketLimit | None = BucketLimit(5, 5.0)
    other: BucketLimit | None = BucketLimit(50, 1.0)
    global_per_second: int | None = 50
    ban_threshold: int | None = 10_000
    invalid_window: float = 600.0
    ban_duration: float = 3600.0

    @classmethod
    def disabled(cls) -> RateLimits:
        """No buckets, no global limit, no ban (headers still say "plenty left")."""
        return cls(send=None, edit=None, delete=None, typing=None, other=None,
                   global_per_second=None, ban_threshold=None)  # fmt: skip

    def for_group(self, group: str) -> BucketLimit | None:
        """The limit of a bucket group (``send``, ``edit``, ``delete``, ``typing``, ``other``)."""
        return getattr(self, group, self.other)


def bucket_hash(group: str) -> str:
    """The ``X-RateLimit-Bucket`` value of a group: opaque and stable, like Discord's."""
    return hashlib.sha1(f"fake-discord:{group}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class _Window:
    reset_at: float
    remaining: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rate limiter's answer for one request: headers to send, and a 429 if refused."""

    headers: dict[str, str]
    retry_after: float | None = None
    scope: str = "user"
    is_global: bool = False
    banned: bool = False


class RateLimiter:
    """Counts requests per bucket and globally; decides 429s; counts invalid requests."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._windows: dict[tuple[str, int | str | None], _Window] = {}
        self._global: _Window | None = None
        self._invalid: deque[float] = deque()
        self._banned_until: float | None = None

    def check(self, group: str, major: int | str | None, *, counts_global: bool = True) -> Verdict:
        """Admit or refuse one request to ``group`` for ``major`` (usually a channel id)."""
        now = self.clock()
        if self._banned_until is not None:
            if now < self._banned_until:
                return Verdict({}, retry_after=self._banned_until - now, banned=True)
            self._banned_until = None
        glob = self.limits.global_per_second
        if counts_global and glob is not None:
            if self._global is None or now >= self._global.reset_at:
                self._global = _Window(now + 1.0, glob)
            if self._global.remaining <= 0:
                retry = self._global.reset_at - now
                return Verdict({"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"},
                               retry_after=retry, scope="global", is_global=True)  # fmt: skip
            self._global.remaining -= 1
        limit = self.limits.for_group(group)
        if limit is None:
            return Verdict(self._headers(group, 1000, 999, 1.0, now))
        key = (group, major)
        window = self._windows.get(key)
        if window is None or now >= window.reset_at:
            window = self._windows[key] = _Window(now + limit.per, limit.limit)
        reset_after = window.reset_at - now
        if window.remaining <= 0:
            headers = self._headers(group, limit.limit, 0, reset_after, now)
            headers["X-RateLimit-Scope"] = "user"
            return Verdict(headers, retry_after=reset_after)
        window.remaining -= 1
        return Verdict(self._headers(group, limit.limit, window.remaining, reset_after, now))

    def headers_for(self, group: str, major: int | str | None) -> dict[str, str]:
        """The bucket's current headers without counting a request (for scripted answers)."""
        now = self.clock()
        limit = self.limits.for_group(group)
        window = self._windows.get((group, major))
        if limit is None:
            return self._headers(group, 1000, 999, 1.0, now)
        if window is None or now >= window.reset_at:
            return self._headers(group, limit.limit, limit.limit, limit.per, now)
        return self._headers(group, limit.limit, window.remaining, window.reset_at - now, now)

    def record_invalid(self, status: int, scope: str | None = None) -> None:
        """Count an answer toward the ban if Discord would (401, 403, non-shared 429)."""
        if status not in (401, 403, 429) or scope == "shared":
            return
        now = self.clock()
        self._invalid.append(now)
        self._trim(now)
        threshold = self.limits.ban_threshold
        if threshold is not None and len(self._invalid) >= threshold:
            self._banned_until = now + self.limits.ban_duration

    @property
    def invalid_requests(self) -> int:
        """Invalid requests (401/403/429) in the last ``invalid_window`` seconds."""
        self._trim(self.clock())
        return len(self._invalid)

    @property
    def banned(self) -> bool:
        """Whether the fake currently answers everything with Cloudflare's ban page."""
        return self._banned_until is not None and self.clock() < self._banned_until

    def _trim(self, now: float) -> None:
        horizon = now - self.limits.invalid_window
        while self._invalid and self._invalid[0] < horizon:
            self._invalid.popleft()

    def _headers(self, group: str, limit: int, remaining: int, reset_after: float,
                 now: float) -> dict[str, str]:  # fmt: skip
        # Reset is wall-clock epoch seconds (discord.py can use it with use_clock=True);
        # the fake's own clock may be a manual one, so it is derived from reset_after
        reset_after = max(reset_after, 0.0)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{math.ceil(reset_after * 1000) / 1000:.3f}",
            "X-RateLimit-Bucket": bucket_hash(group),
        }
