"""Telegram-like flood control: per-chat, per-group and global limits with escalating penalties.

Telegram does not publish exact numbers; the defaults mirror the Bot FAQ (about 1 message per
second per chat with a short burst, 20 per minute per group, 30 per second overall). Every check
is O(1) amortised: a token bucket per chat and bounded sliding windows (deques never longer than
their limit), so hundreds of concurrent chats cost nothing extra.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """The limits the fake enforces. ``None`` (or 0) disables one limit.

    - ``per_chat_interval``: sustained seconds between messages in one chat (token bucket
      refilling one token per interval).
    - ``burst``: how many messages a chat may send back to back before the interval applies.
    - ``group_per_minute``: messages per sliding 60 s window in a chat with a negative id.
    - ``global_per_second``: messages per sliding 1 s window across all chats.
    - ``escalation_window``: a violation within this many seconds of the chat's previous one
      multiplies ``retry_after`` by ``escalation_factor`` (1, 2, 4, 8 ... by default), capped
      at ``max_retry_after``; a chat that stays quiet for the window starts again at 1x.
    """

    per_chat_interval: float | None = 1.0
    burst: int = 3
    group_per_minute: int | None = 20
    global_per_second: int | None = 30
    escalation_window: float = 60.0
    escalation_factor: float = 2.0
    max_retry_after: int = 14_400

    @classmethod
    def disabled(cls) -> FloodLimits:
        """No flood control at all (for tests about something else)."""
        return cls(per_chat_interval=None, group_per_minute=None, global_per_second=None)


@dataclass(slots=True)
class _ChatBudget:
    tokens: float
    refilled_at: float
    blocked_until: float = 0.0
    strikes: int = 0
    last_violation: float = -math.inf
    group_window: deque[float] | None = None


class FloodControl:
    """Decide whether a message-producing call may proceed now.

    ``check(chat_id)`` either records the call and returns ``None`` or returns the
    ``retry_after`` (whole seconds, at least 1) to answer with 429. A chat that is still inside
    a penalty is refused again, and each refusal within ``escalation_window`` escalates.
    """

    def __init__(self, limits: FloodLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._chats: dict[int | str, _ChatBudget] = {}
        self._global: deque[float] = deque()
        #: refusals by the rule that caused them ("chat", "group", "global", "penalty")
        self.violations: Counter[str] = Counter()

    def check(self, chat_id: int | str) -> int | None:
        """Consume one message from every budget that applies, or return a ``retry_after``."""
        limits = self.limits
        now = self._clock()
        budget = self._chats.get(chat_id)
        if budget is None:
            budget = _ChatBudget(tokens=float(max(limits.burst, 1)), refilled_at=now)
            self._chats[chat_id] = budget
        waits: list[float] = []  # what each budget alone would impose, in seconds
        interval = limits.per_chat_interval
        if interval:
            capacity = float(max(limits.burst, 1))
            budget.tokens = min(capacity, budget.tokens + (now - budget.refilled_at) / interval)
            budget.refilled_at = now
            if budget.tokens < 1.0:
                waits.append((1.0 - budget.tokens) * interval)
                self.violations["chat"] += 1
        group_limit = limits.group_per_minute
        is_group = isinstance(chat_id, int) and chat_id < 0
        if group_limit and is_group:
            window = budget.group_window
            if window is None:
                window = budget.group_window = deque()
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= group_limit:
                waits.append(window[0] + 60.0 - now)
                self.violations["group"] += 1
        global_limit = limits.global_per_second
        if global_limit:
            while self._global and self._global[0] <= now - 1.0:
                self._global.popleft()
            if len(self._global) >= global_limit:
                waits.append(self._global[0] + 1.0 - now)
                self.violations["global"] += 1
        if not waits and budget.blocked_until > now:
            self.violations["penalty"] += 1
        if waits or budget.blocked_until > now:
            return self._violation(budget, max(waits, default=0.0), now)
        if interval:
            budget.tokens -= 1.0
        if budget.group_window is not None and group_limit and is_group:
            budget.group_window.append(now)
        if global_limit:
            self._global.append(now)
        return None

    def _violation(self, budget: _ChatBudget, wait: float, now: float) -> int:
        """Count a strike and return the escalated ``retry_after``; extend the penalty."""
        limits = self.limits
        within = now - budget.last_violation <= limits.escalation_window
        budget.strikes = budget.strikes + 1 if within else 1
        budget.last_violation = now
        # the honest wait for this request, multiplied for every repeat inside the window
        base = max(1, math.ceil(wait - 1e-9))
        escalated = math.ceil(base * limits.escalation_factor ** (budget.strikes - 1))
        remaining = math.ceil(budget.blocked_until - now - 1e-9)
        retry_after = int(min(limits.max_retry_after, max(escalated, remaining)))
        budget.blocked_until = max(budget.blocked_until, now + retry_after)
        return retry_after

    def reset(self, chat_id: int | str | None = None) -> None:
        """Forget penalties and budgets for one chat, or for all chats when ``chat_id`` is None."""
        if chat_id is None:
            self._chats.clear()
            self._global.clear()
        else:
            self._chats.pop(chat_id, None)
