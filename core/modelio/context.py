"""Build the model context: the system prompt plus the newest messages that fit.

Every stored message carries its token count, computed once when it was stored (with the
provider's :class:`~relaybot.core.modelio.tokens.TokenCounter`), so building a context is a walk back
from the newest message adding cached integers — no tokenizer runs per request except for the
system prompt, whose count is cached by its text. A 10,000-message conversation builds in well
under the 5 ms design goal (``benchmarks/context_build.py``).

The result is a :class:`ContextDraft`, which the ``build_context`` hook may adjust before the
core turns it into a :class:`~relaybot.core.contracts.models.ProviderRequest`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from relaybot.core.contracts.models import ChatKey, ChatMessage, ContentPart, IncomingMessage, Role, TextPart
from relaybot.core.modelio.tokens import REPLY_PRIMING_TOKENS, TokenCounter

__all__ = [
    "ESTIMATE_HEADROOM",
    "MIN_INPUT_BUDGET",
    "ContextDraft",
    "HistoryItem",
    "build_context",
    "input_budget",
    "join_consecutive",
    "select_history",
    "system_tokens",
    "truncation_notice",
]

#: The smallest input budget :func:`input_budget` returns, whatever the configuration says:
#: a misconfigured ``max_output_tokens`` ≥ ``context_window`` should still send the new message
#: (and let the provider answer honestly) rather than send nothing.
MIN_INPUT_BUDGET = 256
#: Share of the input budget used when token counts are estimates (``counter.exact`` is False):
#: a 10% reserve absorbs the heuristic's error so the provider rarely rejects the context.
ESTIMATE_HEADROOM = 0.9


class HistoryItem(Protocol):
    """A stored message as context building needs it (the storage layer's message has these).

    ``token_count`` is what :meth:`TokenCounter.count_message` returned when it was stored,
    including the per-message overhead.
    """

    @property
    def role(self) -> Role: ...

    @property
    def parts(self) -> list[ContentPart]: ...

    @property
    def token_count(self) -> int: ...


H = TypeVar("H", bound=HistoryItem)


@dataclass
class ContextDraft:
    """Mutable context handed to the build_context hook (see core/contracts/hookspecs.py)."""

    chat: ChatKey
    message: IncomingMessage | None  # the message being answered
    system: str  # system prompt
    messages: list[ChatMessage]  # oldest first, ends with the new user message
    token_count: int  # tokens of system + messages (as counted)
    dropped: int  # how many older messages were left out
    budget: int  # the input budget used


def input_budget(context_window: int, max_output_tokens: int) -> int:
    """Tokens available for the prompt: the window minus the reserved output.

    Never below :data:`MIN_INPUT_BUDGET`. Raises ``ValueError`` for a non-positive window or a
    negative output reservation (configuration validation should have caught those).
    """
    if context_window <= 0:
        raise ValueError(f"context_window must be positive, got {context_window}")
    if max_output_tokens < 0:
        raise ValueError(f"max_output_tokens must not be negative, got {max_output_tokens}")
    return max(context_window - max_output_tokens, MIN_INPUT_BUDGET)


def _select(history: Sequence[H], budget: int, fixed_tokens: int) -> tuple[int, int]:
    """Index of the oldest kept item and the tokens of the kept items."""
    available = budget - fixed_tokens
    total = len(history)
    start = total
    used = 0
    # Walk back from the newest; stop at the first item that does not fit, so the kept
    # messages are one contiguous, newest-ending run (skipping a big message to squeeze in an
    # older one would show the model a conversation with a hole in it). The newest item is
    # taken unconditionally (start == total).
    for item in reversed(history):
        cost = item.token_count
        if used + cost > available and start < total:
            break
        used += cost
        start -= 1
    return start, used


def select_history(history: Sequence[H], *, budget: int, system_tokens: int) -> tuple[list[H], int]:
    """Keep the newest items whose cached token counts fit; never a half message; return (kept
    oldest-first, dropped count). The newest item (the user's new message) is always kept even if
    alone it exceeds the budget — then the caller will get ContextTooLong from the provider, which
    is honest).

    Items fit while ``system_tokens + sum(kept token_count) <= budget``. ``history`` is oldest
    first. An empty history gives ``([], 0)``.
    """
    start, _ = _select(history, budget, system_tokens)
    return list(history[start:]), start


@functools.lru_cache(maxsize=256)
def _system_tokens_cached(counter: TokenCounter, system: str) -> int:
    return counter.count_message(ChatMessage.text(Role.SYSTEM, system))


def system_tokens(counter: TokenCounter, system: str) -> int:
    """Fixed cost of a request: the system prompt as a message (if any) + the reply priming.

    Cached by ``(counter, system)``: the prompt rarely changes, so it is tokenized once.
    """
    prompt = _system_tokens_cached(counter, system) if system else 0
    return prompt + REPLY_PRIMING_TOKENS


def build_context(
    chat: ChatKey,
    message: IncomingMessage | None,
    system: str,
    history: Sequence[HistoryItem],
    *,
    counter: TokenCounter,
    context_window: int,
    max_output_tokens: int,
) -> ContextDraft:
    """Select the newest messages of ``history`` (oldest first, ending with the new user
    message) that fit the model's input budget, and return them as a :class:`ContextDraft`.

    - budget: :func:`input_budget`, times :data:`ESTIMATE_HEADROOM` when ``counter`` is not
      exact;
    - ``token_count``: :func:`system_tokens` + the cached counts of the kept items;
    - ``dropped``: how many older messages were left out (tell the user once, see
      :func:`truncation_notice`);
    - each kept item becomes a new :class:`ChatMessage` with its own copy of the parts list, so
      a hook editing ``draft.messages`` never changes stored messages.

    The newest message is always kept, even when it alone is over budget (see
    :func:`select_history`).
    """
    budget = input_budget(context_window, max_output_tokens)
    if not counter.exact:
        budget = max(int(budget * ESTIMATE_HEADROOM), MIN_INPUT_BUDGET)
    fixed = system_tokens(counter, system)
    start, used = _select(history, budget, fixed)
    # [*parts]: a fresh list per message (cheaper than list(parts) on this hot path).
    messages = join_consecutive([ChatMessage(item.role, [*item.parts]) for item in history[start:]])
    return ContextDraft(
        chat=chat,
        message=message,
        system=system,
        messages=messages,
        token_count=fixed + used,
        dropped=start,
        budget=budget,
    )


#: what separates two user messages that :func:`join_consecutive` made one turn
TURN_JOINER = "\n\n"


def join_consecutive(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Join runs of messages with the same role into one message each (in place order).

    Two user messages in a row happen when a person sends a second message before the first
    was answered (the first one's reply was interrupted before it said anything, or it was
    superseded): some providers refuse two user turns in a row (Gemini) and all of them read
    one turn better. The parts are kept, text parts separated by :data:`TURN_JOINER`.
    """
    if len(messages) < 2:
        return messages
    joined: list[ChatMessage] = []
    for message in messages:
        if joined and joined[-1].role == message.role:
            previous = joined[-1]
            previous.parts = [*previous.parts, TextPart(TURN_JOINER), *message.parts]
        else:
            joined.append(message)
    return joined


def truncation_notice(dropped: int) -> str:
    """The note shown to the user (once per conversation) when older messages were left out.

    Returns ``""`` when nothing was dropped.
    """
    if dropped <= 0:
        return ""
    if dropped == 1:
        what = "the oldest message of this conversation no longer fits the model's context and was"
    else:
        what = f"{dropped} older messages of this conversation no longer fit the model's context and were"
    return f"Note: {what} left out. Send /new to start a fresh conversation."
