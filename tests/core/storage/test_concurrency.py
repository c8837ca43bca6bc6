"""Many writers at once: nothing is lost, nothing deadlocks, trees stay consistent."""

from __future__ import annotations

import asyncio

from relaybot.core.contracts.models import ChatKey, Role, TextPart
from relaybot.core.storage import Store


async def test_fifty_concurrent_writers_across_chats(store: Store) -> None:
    chats = [ChatKey("telegram", str(i)) for i in range(50)]
    conversations = await asyncio.gather(
        *(store.create_conversation(c, f"c{i}") for i, c in enumerate(chats))
    )

    async def converse(index: int, conversation_id: int) -> int:
        leaf = 0
        for turn in range(3):
            message = await store.add_message(
                conversation_id,
                role=Role.USER if turn % 2 == 0 else Role.ASSISTANT,
                parts=[TextPart(f"chat {index} turn {turn}")],
                token_count=1,
            )
            leaf = message.id
        return leaf

    leaves = await asyncio.wait_for(
        asyncio.gather(*(converse(i, conv.id) for i, conv in enumerate(conversations))), timeout=120
    )
    for index, (chat, leaf) in enumerate(zip(chats, leaves, strict=True)):
        assert [m.text for m in await store.path(leaf)] == [f"chat {index} turn {t}" for t in range(3)]
        active = await store.active_conversation(chat)
        assert active is not None and active.leaf_id == leaf


async def test_concurrent_appends_to_one_conversation_form_one_chain(store: Store) -> None:
    conv = await store.create_conversation(ChatKey("web", "busy"), "t")
    results = await asyncio.gather(
        *(store.add_message(conv.id, role=Role.USER, parts=[TextPart(str(i))]) for i in range(20))
    )
    latest = await store.get_conversation(conv.id)
    assert latest is not None and latest.leaf_id is not None
    path = await store.path(latest.leaf_id)
    # every message is on the one path: none forked off by picking a stale leaf
    assert sorted(m.id for m in path) == sorted(r.id for r in results)


async def test_two_stores_on_one_database_write_concurrently(store: Store, db_url: str) -> None:
    # a second Store stands in for a second process using the same database
    second = await Store.open(db_url)
    try:
        a = await store.create_conversation(ChatKey("web", "a"), "a")
        b = await second.create_conversation(ChatKey("web", "b"), "b")

        async def write(target: Store, conversation_id: int, label: str) -> None:
            for i in range(15):
                await target.add_message(conversation_id, role=Role.USER, parts=[TextPart(f"{label}{i}")])

        await asyncio.wait_for(asyncio.gather(write(store, a.id, "a"), write(second, b.id, "b")), timeout=120)
        for conv_id, label in ((a.id, "a"), (b.id, "b")):
            conv = await second.get_conversation(conv_id)
            assert conv is not None and conv.leaf_id is not None
            assert [m.text for m in await store.path(conv.leaf_id)] == [f"{label}{i}" for i in range(15)]
    finally:
        await second.close()
