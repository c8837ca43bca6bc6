"""Conversations: create, list, switch, rename, delete; the active conversation per chat."""

from __future__ import annotations

import pytest

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.models import ChatKey, Role, TextPart
from relaybot.core.storage import NotFoundError, Store

CHAT = ChatKey("telegram", "42")


async def say(store: Store, conversation_id: int, text: str, role: Role = Role.USER) -> int:
    message = await store.add_message(conversation_id, role=role, parts=[TextPart(text)], token_count=1)
    return message.id


async def test_new_chat_has_no_conversation(store: Store) -> None:
    assert await store.active_conversation(CHAT) is None
    assert await store.list_conversations(CHAT) == []


async def test_create_list_and_number(store: Store) -> None:
    first = await store.create_conversation(CHAT, "first")
    second = await store.create_conversation(CHAT, "second")
    assert (first.number, second.number) == (1, 2)
    assert first.root_id is None and first.leaf_id is None
    assert first.chat == CHAT

    listed = await store.list_conversations(CHAT)
    assert [(c.id, c.title, c.number) for c in listed] == [(first.id, "first", 1), (second.id, "second", 2)]
    active = await store.active_conversation(CHAT)
    assert active is not None and active.id == second.id and active.number == 2


async def test_create_without_activating(store: Store) -> None:
    first = await store.create_conversation(CHAT, "kept active")
    await store.create_conversation(CHAT, "background", activate=False)
    active = await store.active_conversation(CHAT)
    assert active is not None and active.id == first.id


async def test_switch_and_rename(store: Store) -> None:
    first = await store.create_conversation(CHAT, "first")
    await store.create_conversation(CHAT, "second")
    switched = await store.set_active(CHAT, first.id)
    assert switched.id == first.id and switched.number == 1

    await store.rename_conversation(first.id, "renamed")
    active = await store.active_conversation(CHAT)
    assert active is not None and active.title == "renamed"
    assert active.updated_at >= first.updated_at


async def test_switch_to_conversation_of_another_chat_is_refused(store: Store) -> None:
    other = await store.create_conversation(ChatKey("telegram", "43"), "not yours")
    await store.create_conversation(CHAT, "mine")
    with pytest.raises(NotFoundError):
        await store.set_active(CHAT, other.id)
    active = await store.active_conversation(CHAT)
    assert active is not None and active.title == "mine"


async def test_unknown_ids_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        await store.rename_conversation(999_999, "x")
    assert isinstance(info.value, StorageError) and isinstance(info.value, LookupError)
    with pytest.raises(NotFoundError):
        await store.delete_conversation(999_999)
    with pytest.raises(NotFoundError):
        await store.add_message(999_999, role=Role.USER, parts=[TextPart("x")])
    with pytest.raises(NotFoundError):
        await store.update_message(999_999, text="x")
    with pytest.raises(NotFoundError):
        await store.path(999_999)
    assert await store.get_message(999_999) is None
    assert await store.get_conversation(999_999) is None


async def test_chats_with_and_without_thread_are_distinct(store: Store) -> None:
    plain = ChatKey("telegram", "-100")
    topic = ChatKey("telegram", "-100", "7")
    other_topic = ChatKey("telegram", "-100", "8")
    a = await store.create_conversation(plain, "main chat")
    b = await store.create_conversation(topic, "topic 7")
    c = await store.create_conversation(other_topic, "topic 8")

    assert len({await store.get_or_create_chat(k) for k in (plain, topic, other_topic)}) == 3
    assert (await store.active_conversation(plain)).id == a.id  # type: ignore[union-attr]
    assert (await store.active_conversation(topic)).id == b.id  # type: ignore[union-attr]
    assert (await store.active_conversation(other_topic)).id == c.id  # type: ignore[union-attr]
    assert [x.title for x in await store.list_conversations(plain)] == ["main chat"]
    assert (await store.active_conversation(topic)).chat == topic  # type: ignore[union-attr]
    # "no thread" and an empty thread are the same chat
    assert await store.get_or_create_chat(ChatKey("telegram", "-100", "")) == await store.get_or_create_chat(
        plain
    )


async def test_same_chat_id_on_two_platforms_is_two_chats(store: Store) -> None:
    await store.create_conversation(ChatKey("telegram", "1"), "tg")
    await store.create_conversation(ChatKey("discord", "1"), "dc")
    assert [c.title for c in await store.list_conversations(ChatKey("discord", "1"))] == ["dc"]


async def test_delete_active_conversation_leaves_no_active(store: Store) -> None:
    keep = await store.create_conversation(CHAT, "keep")
    await say(store, keep.id, "kept message")
    gone = await store.create_conversation(CHAT, "gone")
    doomed = await say(store, gone.id, "bye")

    await store.delete_conversation(gone.id)

    assert await store.active_conversation(CHAT) is None
    assert [c.title for c in await store.list_conversations(CHAT)] == ["keep"]
    assert await store.get_message(doomed) is None
    assert (await store.list_conversations(CHAT))[0].number == 1


async def test_delete_keeps_messages_shared_with_a_branch(store: Store) -> None:
    original = await store.create_conversation(CHAT, "original")
    q1 = await say(store, original.id, "question 1")
    a1 = await say(store, original.id, "answer 1", Role.ASSISTANT)
    q2 = await say(store, original.id, "question 2")
    branch = await store.create_conversation(CHAT, "branch", branch_from=a1)
    b1 = await say(store, branch.id, "other question 2")

    await store.delete_conversation(original.id)

    # q1 and a1 are on the branch's path and survive; q2 was only the original's
    assert await store.get_message(q2) is None
    path = await store.path(b1)
    assert [m.id for m in path] == [q1, a1, b1]
    remaining = await store.list_conversations(CHAT)
    assert [c.id for c in remaining] == [branch.id]
    active = await store.active_conversation(CHAT)
    assert active is not None and active.id == branch.id


async def test_delete_removes_abandoned_branches_and_platform_links(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "c")
    q1 = await say(store, conv.id, "q1")
    first_try = await say(store, conv.id, "first answer", Role.ASSISTANT)
    await store.link_platform_message(CHAT, "tg-1", first_try)
    # regenerate: a sibling of the first answer; the first one is now off the path
    await store.add_message(conv.id, role=Role.ASSISTANT, parts=[TextPart("second answer")], parent_id=q1)

    await store.delete_conversation(conv.id)

    assert await store.get_message(first_try) is None
    assert await store.get_message(q1) is None
    assert await store.find_by_platform_id(CHAT, "tg-1") is None


async def test_list_with_counts(store: Store) -> None:
    a = await store.create_conversation(CHAT, "a")
    for i in range(3):
        await say(store, a.id, f"m{i}")
    await store.create_conversation(CHAT, "empty")
    counts = [c.message_count for c in await store.list_conversations(CHAT, with_counts=True)]
    assert counts == [3, 0]
    assert [c.message_count for c in await store.list_conversations(CHAT)] == [None, None]


async def test_failed_first_write_in_a_new_chat_leaves_the_chat_usable(store: Store) -> None:
    fresh = ChatKey("discord", "new-channel")
    with pytest.raises(NotFoundError):
        await store.create_conversation(fresh, "x", branch_from=999_999)  # rolled back
    conv = await store.create_conversation(fresh, "works")
    await say(store, conv.id, "hello")
    assert [c.title for c in await store.list_conversations(fresh)] == ["works"]
