"""Context building: which history fits, in what order, and what the draft reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relaybot.core.contracts.models import (
    ChatKey,
    ChatMessage,
    ContentPart,
    ImagePart,
    ImageRef,
    IncomingMessage,
    Role,
    TextPart,
    User,
)
from relaybot.core.modelio import context as ctx
from relaybot.core.modelio.context import (
    ESTIMATE_HEADROOM,
    MIN_INPUT_BUDGET,
    ContextDraft,
    build_context,
    input_budget,
    select_history,
    system_tokens,
    truncation_notice,
)
from relaybot.core.modelio.tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    EstimateCounter,
    TiktokenCounter,
    TokenCounter,
)

CHAT = ChatKey("telegram", "42")


@dataclass
class Item:
    """Stand-in for the storage layer's StoredMessage."""

    role: Role
    parts: list[ContentPart]
    token_count: int
    label: str = field(default="", compare=False)


def items(*counts: int) -> list[Item]:
    """Alternating user/assistant items, oldest first, ending with a user message."""
    n = len(counts)
    roles = [Role.USER if (n - 1 - i) % 2 == 0 else Role.ASSISTANT for i in range(n)]
    return [
        Item(role, [TextPart(f"m{i}")], c, label=f"m{i}")
        for i, (role, c) in enumerate(zip(roles, counts, strict=True))
    ]


def labels(kept: list[Item]) -> list[str]:
    return [i.label for i in kept]


class FixedCounter(TokenCounter):
    """Counts one token per character and records what it was asked to count."""

    def __init__(self, exact: bool = True) -> None:
        super().__init__()
        self._exact = exact
        self.seen: list[str] = []

    name = "fixed"

    @property
    def exact(self) -> bool:
        return self._exact

    def count_text(self, text: str) -> int:
        self.seen.append(text)
        return len(text)


# ── input_budget ─────────────────────────────────────────────────────────────────────────────


def test_input_budget_reserves_output() -> None:
    assert input_budget(128_000, 4_096) == 123_904
    assert input_budget(8192, 0) == 8192


def test_input_budget_has_a_floor_for_misconfiguration() -> None:
    assert input_budget(1000, 4096) == MIN_INPUT_BUDGET
    assert input_budget(1000, 1000) == MIN_INPUT_BUDGET


@pytest.mark.parametrize(("window", "out"), [(0, 10), (-5, 10), (100, -1)])
def test_input_budget_rejects_nonsense(window: int, out: int) -> None:
    with pytest.raises(ValueError):
        input_budget(window, out)


# ── select_history ───────────────────────────────────────────────────────────────────────────


def test_everything_fits() -> None:
    history = items(10, 20, 30)
    kept, dropped = select_history(history, budget=1000, system_tokens=5)
    assert kept == history
    assert dropped == 0


def test_fits_exactly() -> None:
    history = items(10, 20, 30)
    kept, dropped = select_history(history, budget=65, system_tokens=5)
    assert labels(kept) == ["m0", "m1", "m2"]
    assert dropped == 0


def test_one_token_over_drops_the_oldest_whole_message() -> None:
    history = items(10, 20, 30)
    kept, dropped = select_history(history, budget=64, system_tokens=5)
    assert labels(kept) == ["m1", "m2"]
    assert dropped == 1


def test_newest_alone_too_big_is_still_kept() -> None:
    history = items(10, 20, 5000)
    kept, dropped = select_history(history, budget=100, system_tokens=5)
    assert labels(kept) == ["m2"]
    assert dropped == 2


def test_kept_messages_are_contiguous() -> None:
    # m1 does not fit; m0 would, but keeping it would leave a hole in the conversation.
    history = items(5, 500, 10, 10)
    kept, dropped = select_history(history, budget=60, system_tokens=0)
    assert labels(kept) == ["m2", "m3"]
    assert dropped == 2


def test_system_prompt_takes_from_the_budget() -> None:
    history = items(10, 10, 10, 10)
    assert select_history(history, budget=45, system_tokens=0)[1] == 0
    assert select_history(history, budget=45, system_tokens=20)[1] == 2
    assert select_history(history, budget=45, system_tokens=40)[1] == 3


def test_empty_history() -> None:
    assert select_history([], budget=100, system_tokens=10) == ([], 0)


def test_select_history_accepts_tuples() -> None:
    history = tuple(items(10, 10, 10))
    kept, dropped = select_history(history, budget=25, system_tokens=0)
    assert isinstance(kept, list)
    assert (labels(kept), dropped) == (["m1", "m2"], 1)


# ── build_context ────────────────────────────────────────────────────────────────────────────


def incoming(text: str) -> IncomingMessage:
    return IncomingMessage(CHAT, User("7", "Ann"), text)


def test_build_context_order_roles_and_counts() -> None:
    counter = FixedCounter()
    history = items(100, 100, 100, 100, 100)
    history[0].parts.append(ImagePart(ImageRef("media:1")))
    system = "be brief"
    fixed = system_tokens(counter, system)
    assert fixed == MESSAGE_OVERHEAD_TOKENS + len(system) + REPLY_PRIMING_TOKENS

    draft = build_context(
        CHAT,
        incoming("m4"),
        system,
        history,
        counter=counter,
        context_window=fixed + 300 + 50,
        max_output_tokens=50,
    )
    assert isinstance(draft, ContextDraft)
    assert draft.chat == CHAT
    assert draft.message is not None and draft.message.text == "m4"
    assert draft.system == system
    assert all(isinstance(m, ChatMessage) for m in draft.messages)
    assert [m.text_content for m in draft.messages] == ["m2", "m3", "m4"]
    assert [m.role for m in draft.messages] == [Role.USER, Role.ASSISTANT, Role.USER]
    assert draft.dropped == 2
    assert draft.budget == fixed + 300
    assert draft.token_count == fixed + 300


def test_build_context_keeps_images_and_copies_parts() -> None:
    image = ImagePart(ImageRef("media:cat", width=512, height=512))
    history = [Item(Role.USER, [TextPart("look"), image], 300)]
    draft = build_context(
        CHAT,
        None,
        "",
        history,
        counter=FixedCounter(),
        context_window=4096,
        max_output_tokens=512,
    )
    assert draft.messages[0].parts == [TextPart("look"), image]
    # A build_context hook editing the draft must not change what is stored.
    draft.messages[0].parts.append(TextPart("added by a hook"))
    assert len(history[0].parts) == 2


def test_system_prompt_is_tokenized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx._system_tokens_cached.cache_clear()
    counter = FixedCounter()
    history = items(10, 10)
    for _ in range(3):
        build_context(
            CHAT,
            None,
            "You are helpful.",
            history,
            counter=counter,
            context_window=1000,
            max_output_tokens=100,
        )
    assert counter.seen == ["You are helpful."]  # history counts come from the items


def test_empty_system_prompt_costs_only_priming() -> None:
    counter = FixedCounter()
    draft = build_context(
        CHAT, None, "", items(10), counter=counter, context_window=1000, max_output_tokens=0
    )
    assert draft.token_count == REPLY_PRIMING_TOKENS + 10


def test_estimates_keep_headroom() -> None:
    history = items(*([100] * 20))
    exact = build_context(
        CHAT, None, "", history, counter=FixedCounter(exact=True), context_window=1500, max_output_tokens=500
    )
    rough = build_context(
        CHAT, None, "", history, counter=FixedCounter(exact=False), context_window=1500, max_output_tokens=500
    )
    assert exact.budget == 1000
    assert rough.budget == int(1000 * ESTIMATE_HEADROOM)
    assert len(rough.messages) < len(exact.messages)
    assert rough.token_count <= rough.budget


def test_build_context_with_real_counters_stays_within_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # keep tiktoken's writes in tmp
    for counter in (TiktokenCounter("cl100k_base"), EstimateCounter()):
        history = []
        for i in range(200):
            role = Role.USER if i % 2 == 0 else Role.ASSISTANT
            msg = ChatMessage.text(role, f"message number {i}: " + "lorem ipsum " * (i % 17))
            history.append(Item(role, msg.parts, counter.count_message(msg)))
        history.append(
            Item(
                Role.USER,
                [TextPart("the new question")],
                counter.count_message(ChatMessage.text(Role.USER, "the new question")),
            )
        )
        draft = build_context(
            CHAT,
            incoming("the new question"),
            "You are helpful.",
            history,
            counter=counter,
            context_window=2048,
            max_output_tokens=512,
        )
        assert draft.messages[-1].text_content == "the new question"
        assert 0 < draft.dropped < len(history)
        assert draft.dropped + len(draft.messages) == len(history)
        recount = system_tokens(counter, "You are helpful.") + sum(
            counter.count_message(m) for m in draft.messages
        )
        assert draft.token_count == recount <= draft.budget
        # one more (older) message would not have fitted
        assert recount + history[draft.dropped - 1].token_count > draft.budget


# ── truncation notice ────────────────────────────────────────────────────────────────────────


def test_truncation_notice() -> None:
    assert truncation_notice(0) == ""
    one = truncation_notice(1)
    assert one.startswith("Note:") and "message" in one and "was left out" in one
    many = truncation_notice(12)
    assert "12 older messages" in many and "were left out" in many
