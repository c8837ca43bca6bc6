"""Slack-like rate limits: per-method tiers per workspace, ``chat.postMessage`` per channel.

Slack's tiers are "N+ calls per minute, per method, per workspace, per app" (Tier 1 1+, Tier 2
20+, Tier 3 50+, Tier 4 100+); ``chat.postMessage`` is about one message per second per
channel with short bursts tolerated. The fake enforces each as a sliding window (or a token
bucket for the per-channel rule) and answers the first call over a limit with a 429 and an
honest ``Retry-After`` (whole seconds until a slot frees). Until that window has passed, every
further call to the same budget is refused too and counted as *inside a Retry-After window*:
that is the number a well-behaved client keeps at zero.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: calls per window for each tier (Slack publishes these as minimums, "20+" etc.)
DEFAULT_TIERS: Mapping[int, int] = MappingProxyType({1: 1, 2: 20, 3: 50, 4: 100})

#: the tier of each method the fake serves (Slack's method reference); absent = unlimited
#: (``apps.connections.open`` is Tier 1 on paper, but Slack tolerates reconnect bursts — "ratelimited
#: errors rarely occur with this endpoint", says slack_sdk — so it is not limited by default)
DEFAULT_METHOD_TIERS: Mapping[str, int] = MappingProxyType({
    "chat.startStream": 2,
    "chat.stopStream": 2,
    "chat.update": 3,
    "chat.delete": 3,
    "conversations.replies": 3,
    "conversations.info": 3,
    "chat.appendStream": 4,
    "chat.postEphemeral": 4,
    "assistant.threads.setStatus": 4,
    "assistant.threads.setSuggestedPrompts": 4,
    "assistant.threads.setTitle": 4,
    "users.info": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What the fake enforces. ``None`` disables one rule; :meth:`disabled` turns all off.

    - ``tiers``: calls per ``window`` seconds for each tier number.
    - ``method_tiers``: method -> tier (methods not listed are not tier-limited;
      ``chat.postMessage`` has its own rule below).
    - ``window``: the tier window in seconds (60, as on Slack; tests may shrink it).
    - ``post_message_interval`` / ``post_message_burst``: ``chat.postMessage`` per channel,
      a token bucket refilling one message per interval, holding ``burst`` messages.
    - ``post_message_per_window``: optional workspace-wide cap on ``chat.postMessage``.
    """

    tiers: Mapping[int, int | None] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    method_tiers: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_METHOD_TIERS))
    window: float = 60.0
    post_message_interval: float | None = 1.0
    post_message_burst: int = 3
    post_message_per_window: int | None = None

    @classmethod
    def disabled(cls) -> RateLimits:
        """No rate limits at all (for tests about something else)."""
        return cls(tiers={}, method_tiers={}, post_message_interval=None)

    def limit_for(self, method: str) -> int | None:
        """Calls per window allowed for ``method`` (None = unlimited)."""
        tier = self.method_tiers.get(method)
        return None if tier is None else self.tiers.get(tier)


@dataclass(slots=True)
class _Budget:
    calls: deque[float] = field(default_factory=deque)
    tokens: float = -1.0  # token bucket (per-channel rule); -1 = not initialised
    refilled_at: float = 0.0
    blocked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rate limiter's answer for one call: ``retry_after`` None means it may proceed."""

    budget: str | None = None
    retry_after: int | None = None
    inside_window: bool = False


class RateLimiter:
    """Decide whether a call may proceed now, per budget (``team/method[/channel]``)."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}
        #: refusals by budget key
        self.refusals: Counter[str] = Counter()
        #: calls made while the budget's Retry-After window was still open
        self.inside_window: Counter[str] = Counter()

    def _keys(self, team: str, method: str, channel: str | None) -> list[tuple[str, int | None, bool]]:
        """The budgets a call uses: ``(key, per-window limit or None, token bucket?)``."""
        limits = self.limits
        keys: list[tuple[str, int | None, bool]] = []
        if method == "chat.postMessage":
            if limits.post_message_interval and channel:
                keys.append((f"{team}/{method}/{channel}", None, True))
            if limits.post_message_per_window:
                keys.append((f"{team}/{method}", limits.post_message_per_window, False))
        else:
            limit = limits.limit_for(method)
            if limit:
                keys.append((f"{team}/{method}", limit, False))
        if not keys:  # unlimited, but a scripted 429 (:meth:`block`) can still close it
            keys.append((f"{team}/{method}", None, False))
        return keys

    def block(self, team: str, method: str, channel: str | None, seconds: int) -> None:
        """Open a Retry-After window of ``seconds`` on the budgets of this call (for a scripted 429)."""
        until = self._clock() + seconds
        for key, _limit, _bucket in self._keys(team, method, channel):
            budget = self._budgets.setdefault(key, _Budget())
            budget.blocked_until = max(budget.blocked_until, until)

    def check(self, team: str, method: str, channel: str | None) -> Verdict:
        """Consume one call from every budget that applies, or return the 429 to answer."""
        now = self._clock()
        keys = self._keys(team, method, channel)
        worst: Verdict | None = None
        for key, limit, bucket in keys:
            budget = self._budgets.setdefault(key, _Budget())
            if budget.blocked_until > now:  # still inside the Retry-After we announced
                wait = budget.blocked_until - now
                self.inside_window[key] += 1
                verdict = Verdict(key, max(1, math.ceil(wait - 1e-9)), inside_window=True)
            else:
                wait = self._wait(budget, limit, bucket, now)
                if wait <= 0:
                    continue
                retry_after = max(1, math.ceil(wait - 1e-9))
                budget.blocked_until = now + retry_after
                verdict = Verdict(key, retry_after)
            if worst is None or (verdict.retry_after or 0) > (worst.retry_after or 0):
                worst = verdict
        if worst is not None:
            self.refusals[worst.budget or ""] += 1
            return worst
        for key, limit, bucket in keys:  # every budget agreed: consume
            budget = self._budgets[key]
            if bucket:
                budget.tokens -= 1.0
            elif limit is not None:
                budget.calls.append(now)
        return Verdict()

    def _wait(self, budget: _Budget, limit: int | None, bucket: bool, now: float) -> float:
        """Seconds until this budget has room (0 = room now); refills/expires first."""
        if bucket:
            interval = self.limits.post_message_interval or 1.0
            capacity = float(max(self.limits.post_message_burst, 1))
            if budget.tokens < 0:
                budget.tokens, budget.refilled_at = capacity, now
            budget.tokens = min(capacity, budget.tokens + (now - budget.refilled_at) / interval)
            budget.refilled_at = now
            return 0.0 if budget.tokens >= 1.0 else (1.0 - budget.tokens) * interval
        window = self.limits.window
        calls = budget.calls
        while calls and calls[0] <= now - window:
            calls.popleft()
        if limit is None or len(calls) < limit:
            return 0.0
        return calls[0] + window - now

    def reset(self) -> None:
        """Forget every budget and open window (counters are kept)."""
        self._budgets.clear()
