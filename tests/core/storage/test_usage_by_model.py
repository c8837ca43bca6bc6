"""Usage per model, per user and since a time (what /usage prices), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relaybot.core.contracts.models import ChatKey, Role, TextPart, Usage
from relaybot.core.storage import Store

CHAT = ChatKey("telegram", "42")


async def turn(
    store: Store, conversation_id: int, user: str, model: str, usage: Usage | None, *, reply_user: str = ""
) -> None:
    """A user message and the reply to it; the reply carries ``reply_user`` (older rows: none)."""
    asked = await store.add_message(conversation_id, role=Role.USER, parts=[TextPart("q")], user_id=user)
    reply = await store.add_message(
        conversation_id, role=Role.ASSISTANT, parts=[TextPart("a")], parent_id=asked.id,
        user_id=reply_user, provider="p", model=model,
    )  # fmt: skip
    if usage is not None:
        await store.update_message(reply.id, usage=usage)


async def test_usage_by_model_per_user_and_time(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    await turn(store, conv.id, "alice", "gpt-4o-mini", Usage(100, 10))
    await turn(store, conv.id, "alice", "gpt-4o-mini", Usage(50, 5, estimated=True), reply_user="alice")
    await turn(store, conv.id, "alice", "claude-sonnet-4-5", Usage(7, 3))
    await turn(store, conv.id, "bob", "gpt-4o-mini", Usage(1000, 100))
    await turn(store, conv.id, "alice", "gpt-4o-mini", None)  # no usage recorded: not counted
    # a reply stored with its own user id wins over the parent's
    await turn(store, conv.id, "alice", "gpt-4o-mini", Usage(9, 9), reply_user="carol")

    assert await store.usage_by_model(user_id="alice") == {
        "gpt-4o-mini": Usage(150, 15, estimated=True),
        "claude-sonnet-4-5": Usage(7, 3),
    }
    assert await store.usage_by_model(user_id="bob") == {"gpt-4o-mini": Usage(1000, 100)}
    assert await store.usage_by_model(user_id="carol") == {"gpt-4o-mini": Usage(9, 9)}
    assert await store.usage_by_model(user_id="nobody") == {}
    everyone = await store.usage_by_model()
    assert everyone["gpt-4o-mini"] == Usage(1159, 124, estimated=True)
    past = datetime.now(UTC) - timedelta(hours=1)
    future = datetime.now(UTC) + timedelta(hours=1)
    all_of_alice = await store.usage_by_model(user_id="alice")
    assert await store.usage_by_model(user_id="alice", since=past) == all_of_alice
    assert await store.usage_by_model(user_id="alice", since=future) == {}
