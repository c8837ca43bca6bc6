"""Per-method budgets and rate-limit buckets learned from the platform's answers.

Besides the per-chat interval and the connector-wide rate (:mod:`.lane`), platforms limit some
methods on their own:

* Slack budgets per method per workspace: ``chat.startStream``/``stopStream`` Tier 2 (~20 a
  minute), ``chat.appendStream`` Tier 4 (~100), ``chat.update`` Tier 3 (~50). A connector
  declares these as :class:`~relaybot.core.contracts.connector.MethodBudget` values in its policy;
  :class:`MethodBudgets` keeps one sliding window per budget and budget group (the
  connector's :meth:`~relaybot.core.contracts.connector.BaseConnector.budget_group`, e.g. the
  workspace) or per chat.
* Discord tells its limits in ``X-RateLimit-Remaining``/``-Reset-After`` headers per route
  bucket. A connector reports what it saw with
  :meth:`~relaybot.core.contracts.connector.BaseConnector.observe_bucket`; :class:`LearnedBuckets` (one
  per chat, on its lane) holds the method back until the bucket resets once it is empty.

Both answer "how long until a ``method`` request into this chat may go" in O(1) amortised, and
cost nothing for connectors that declare no budgets and report no buckets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from relaybot.core.contracts.connector import MethodBudget
from relaybot.core.contracts.models import ChatKey

__all__ = ["LearnedBuckets", "MethodBudgets", "SlidingWindow"]

# Forget empty chat-scoped windows after this many takes (bounded memory for many chats).
_SWEEP_EVERY = 1024


class SlidingWindow:
    """At most ``limit`` requests in any ``per`` seconds (an exact log of the last ``per`` s)."""

    __slots__ = ("_times", "limit", "per")

    def __init__(self, limit: int, per: float) -> None:
        self.limit = limit
        self.per = per
        self._times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more request fits (0.0: now)."""
        times = self._times
        horizon = now - self.per
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) < self.limit:
            return 0.0
        return times[0] + self.per - now

    def take(self, now: float) -> None:
        """Count a request issued at ``now`` (call after :meth:`wait` said 0)."""
        self._times.append(now)

    @property
    def empty(self) -> bool:
        return not self._times


class MethodBudgets:
    """The :class:`~relaybot.core.contracts.connector.MethodBudget` values of one connector."""

    __slots__ = ("_by_method", "_group", "_takes", "_windows")

    def __init__(self, budgets: tuple[MethodBudget, ...], group: Callable[[ChatKey], str]) -> None:
        self._by_method: dict[str, list[tuple[int, MethodBudget]]] = {}
        for index, budget in enumerate(budgets):
            for method in budget.methods:
                self._by_method.setdefault(method, []).append((index, budget))
        self._group = group
        self._windows: dict[tuple[int, object], SlidingWindow] = {}
        self._takes = 0

    def covers(self, method: str) -> bool:
        """True when some budget limits ``method``."""
        return method in self._by_method

    def _window(self, index: int, budget: MethodBudget, chat: ChatKey) -> SlidingWindow:
        key = (index, chat if budget.scope == "chat" else self._group(chat))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow(budget.limit, budget.per)
        return window

    def wait(self, method: str, chat: ChatKey, now: float) -> float:
        """Seconds until every budget of ``method`` allows one more request into ``chat``."""
        budgets = self._by_method.get(method)
        if not budgets:
            return 0.0
        return max(self._window(i, b, chat).wait(now) for i, b in budgets)

    def take(self, method: str, chat: ChatKey, now: float) -> None:
        """Count one ``method`` request into ``chat`` in every budget that covers it."""
        budgets = self._by_method.get(method)
        if not budgets:
            return
        for index, budget in budgets:
            self._window(index, budget, chat).take(now)
        self._takes += 1
        if self._takes % _SWEEP_EVERY == 0:
            for key in [k for k, w in self._windows.items() if w.wait(now) == 0.0 and w.empty]:
                del self._windows[key]


class LearnedBuckets:
    """Rate-limit buckets a connector observed in one chat (per method)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        #: method -> (requests remaining, time the bucket resets)
        self._state: dict[str, tuple[int, float]] = {}

    def observe(self, method: str, remaining: int, reset_at: float) -> None:
        """The platform said ``remaining`` requests are left until ``reset_at``."""
        self._state[method] = (remaining, reset_at)

    def wait(self, method: str, now: float) -> float:
        """Seconds until a ``method`` request fits the bucket (0.0: now or unknown)."""
        state = self._state.get(method)
        if state is None:
            return 0.0
        remaining, reset_at = state
        if now >= reset_at:
            del self._state[method]
            return 0.0
        return 0.0 if remaining > 0 else reset_at - now

    def take(self, method: str) -> None:
        """One request was issued: one fewer remains until the platform says otherwise."""
        state = self._state.get(method)
        if state is not None:
            self._state[method] = (state[0] - 1, state[1])

    def quiet(self, now: float) -> bool:
        """True when no bucket holds anything back any more."""
        return all(now >= reset_at for _, reset_at in self._state.values())
