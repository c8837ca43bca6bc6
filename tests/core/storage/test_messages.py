"""Messages: the tree, paths with token budgets, updates, platform ids, recovery, usage, export."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from relaybot.core.contracts.models import ChatKey, ImagePart, ImageRef, ReplyStatus, Role, TextPart, Usage
from relaybot.core.storage import MessagePath, Store

CHAT = ChatKey("slack", "C1", "1700000000.000100")


async def add(store: Store, conversation_id: int, text: str, tokens: int = 1, **kw: object) -> int:
    role = kw.pop("role", Role.USER)
    message = await store.add_message(
        conversation_id,
        role=role,  # type: ignore[arg-type]
        parts=[TextPart(text)],
        token_count=tokens,
        **kw,  # type: ignore[arg-type]
    )
    return message.id


async def texts(store: Store, leaf_id: int, **kw: int) -> list[str]:
    return [m.text for m in await store.path(leaf_id, **kw)]


async def test_add_message_moves_the_leaf_and_round_trips(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    image = ImageRef("media:abc", "image/png", width=10, height=20, size_bytes=300)
    stored = await store.add_message(
        conv.id,
        role=Role.USER,
        parts=[TextPart("look "), ImagePart(image), TextPart("here")],
        token_count=12,
        token_estimated=True,
        user_id="U1",
    )
    reloaded = await store.get_message(stored.id)
    assert reloaded == stored
    assert reloaded.parts == [TextPart("look "), ImagePart(image), TextPart("here")]
    assert reloaded.text == "look here"
    assert reloaded.token_estimated and reloaded.user_id == "U1" and reloaded.parent_id is None
    assert reloaded.created_at.tzinfo is not None
    assert abs(reloaded.created_at - datetime.now(UTC)) < timedelta(minutes=5)

    reply = await add(store, conv.id, "answer", role=Role.ASSISTANT, provider="openai", model="gpt")
    active = await store.active_conversation(CHAT)
    assert active is not None and (active.root_id, active.leaf_id) == (stored.id, reply)
    assert (await store.get_message(reply)).parent_id == stored.id  # type: ignore[union-attr]


async def test_branching_gives_two_different_paths(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "tree")
    root = await add(store, conv.id, "hello")
    left = await add(store, conv.id, "left answer", role=Role.ASSISTANT)
    left2 = await add(store, conv.id, "left follow-up")
    # a second child of the root, in a new conversation branched from it
    branch = await store.create_conversation(CHAT, "branch", branch_from=root)
    assert (branch.root_id, branch.leaf_id) == (root, root)
    right = await add(store, branch.id, "right answer", role=Role.ASSISTANT)

    assert await texts(store, left2) == ["hello", "left answer", "left follow-up"]
    assert await texts(store, right) == ["hello", "right answer"]
    assert (await store.get_message(left)).parent_id == (await store.get_message(right)).parent_id == root  # type: ignore[union-attr]
    # the original conversation is untouched by the branch
    first = (await store.list_conversations(CHAT))[0]
    assert first.leaf_id == left2


async def test_explicit_parent_regenerates_and_none_starts_a_new_root(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    q = await add(store, conv.id, "question")
    await add(store, conv.id, "bad answer", role=Role.ASSISTANT)
    retry = await store.add_message(
        conv.id, role=Role.ASSISTANT, parts=[TextPart("good answer")], parent_id=q
    )
    assert await texts(store, retry.id) == ["question", "good answer"]
    conv_now = await store.get_conversation(conv.id)
    assert conv_now is not None and conv_now.leaf_id == retry.id and conv_now.root_id == q

    fresh = await store.add_message(conv.id, role=Role.USER, parts=[TextPart("start over")], parent_id=None)
    assert await texts(store, fresh.id) == ["start over"]
    conv_now = await store.get_conversation(conv.id)
    assert conv_now is not None and conv_now.root_id == fresh.id == conv_now.leaf_id


async def test_parent_from_another_chat_is_refused(store: Store) -> None:
    elsewhere = await store.create_conversation(ChatKey("slack", "C2"), "x")
    foreign = await add(store, elsewhere.id, "not here")
    conv = await store.create_conversation(CHAT, "t")
    from relaybot.core.storage import NotFoundError

    with pytest.raises(NotFoundError):
        await store.add_message(conv.id, role=Role.USER, parts=[TextPart("x")], parent_id=foreign)
    with pytest.raises(NotFoundError):
        await store.create_conversation(CHAT, "b", branch_from=foreign)


async def test_path_token_budget_fits_exactly_and_never_cuts_a_message(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "budget")
    leaf = 0
    for text, tokens in [("m1", 5), ("m2", 10), ("m3", 20), ("m4", 30)]:
        leaf = await add(store, conv.id, text, tokens)

    whole = await store.path(leaf)
    assert isinstance(whole, MessagePath) and [m.text for m in whole] == ["m1", "m2", "m3", "m4"]
    assert not whole.truncated and whole.token_count == 65

    exact = await store.path(leaf, token_budget=65)
    assert [m.text for m in exact] == ["m1", "m2", "m3", "m4"] and not exact.truncated

    short = await store.path(leaf, token_budget=64)  # m1 (5) would overflow by 1
    assert [m.text for m in short] == ["m2", "m3", "m4"] and short.truncated
    assert short.messages == list(short)

    cut = await store.path(leaf, token_budget=59)  # 30+20 fit, +10 = 60 does not
    assert [m.text for m in cut] == ["m3", "m4"] and cut.truncated

    # never skips over a big message to fit an older small one
    assert [m.text for m in await store.path(leaf, token_budget=54)] == ["m3", "m4"]

    none = await store.path(leaf, token_budget=29)  # not even the leaf fits
    assert list(none) == [] and none.truncated

    limited = await store.path(leaf, limit=2)
    assert [m.text for m in limited] == ["m3", "m4"] and limited.truncated
    both = await store.path(leaf, token_budget=1000, limit=10)
    assert len(both) == 4 and not both.truncated


async def test_ten_thousand_message_path_with_budget(store: Store, backend: str) -> None:
    conv = await store.create_conversation(CHAT, "long")
    # Build the chain with one bulk INSERT (10,000 add_message calls would make the test
    # slow); the rows are what add_message writes. Explicit ids let each row name its parent.
    import sqlalchemy as sa

    from relaybot.core.storage.schema import conversations, messages, utcnow

    chat_id = await store.get_or_create_chat(CHAT)
    now = utcnow()
    base = 1_000_000
    rows = [
        {
            "id": base + i,
            "chat_id": chat_id,
            "conversation_id": conv.id,
            "parent_id": base + i - 1 if i else None,
            "role": "user" if i % 2 == 0 else "assistant",
            "parts": [{"type": "text", "text": f"m{i}"}],
            "text": f"m{i}",
            "token_count": 7,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(10_000)
    ]
    leaf = base + 9_999

    def bulk_load(conn: sa.Connection) -> None:  # test-only
        conn.execute(sa.insert(messages), rows)
        conn.execute(
            sa.update(conversations).where(conversations.c.id == conv.id).values(root_id=base, leaf_id=leaf)
        )

    await store.run_sync(bulk_load)

    started = time.perf_counter()
    window = await store.path(leaf, token_budget=7 * 300 + 6)
    elapsed = time.perf_counter() - started
    assert [m.text for m in window] == [f"m{i}" for i in range(9_700, 10_000)]
    assert window.truncated and window.token_count == 2100
    # generous bound: this only catches "loads all 10,000 rows" style regressions
    assert elapsed < 5.0, elapsed

    whole = await store.path(leaf)
    assert len(whole) == 10_000 and not whole.truncated and whole[0].text == "m0"
    counted = await store.list_conversations(CHAT, with_counts=True)
    assert counted[0].message_count == 10_000


async def test_update_message_streaming_checkpoints_and_final(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    await add(store, conv.id, "question")
    reply = await store.add_message(
        conv.id, role=Role.ASSISTANT, parts=[], status=ReplyStatus.STREAMING, user_id="U1"
    )
    await store.update_message(reply.id, text="Hel")
    mid = await store.get_message(reply.id)
    assert mid is not None and mid.text == "Hel" and mid.status is ReplyStatus.STREAMING
    assert mid.parts == [TextPart("Hel")]

    await store.update_message(
        reply.id,
        text="Hello there",
        status=ReplyStatus.COMPLETE,
        usage=Usage(11, 3),
        token_count=3,
        token_estimated=False,
    )
    final = await store.get_message(reply.id)
    assert final is not None
    assert (final.text, final.status, final.usage, final.token_count) == (
        "Hello there",
        ReplyStatus.COMPLETE,
        Usage(11, 3, estimated=False),
        3,
    )
    assert final.parts == [TextPart("Hello there")] and final.updated_at >= final.created_at


async def test_update_text_keeps_images(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    image = ImagePart(ImageRef("media:1"))
    msg = await store.add_message(conv.id, role=Role.USER, parts=[image, TextPart("a"), TextPart("b")])
    await store.update_message(msg.id, text="edited")
    assert (await store.get_message(msg.id)).parts == [image, TextPart("edited")]  # type: ignore[union-attr]


async def test_checkpoint_texts_writes_many_replies_in_one_go(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    image = ImagePart(ImageRef("media:1"))
    plain = await store.add_message(conv.id, role=Role.ASSISTANT, parts=[], status=ReplyStatus.STREAMING)
    with_image = await store.add_message(
        conv.id, role=Role.ASSISTANT, parts=[image, TextPart("old")], status=ReplyStatus.STREAMING
    )
    written = await store.checkpoint_texts({plain.id: "Hello wor", with_image.id: "new text", 10**9: "gone"})
    assert written == 2  # the unknown id is skipped, not an error
    got = await store.get_message(plain.id)
    assert got is not None and got.text == "Hello wor" and got.parts == [TextPart("Hello wor")]
    assert got.status is ReplyStatus.STREAMING
    got = await store.get_message(with_image.id)
    assert got is not None and got.parts == [image, TextPart("new text")]
    assert await store.checkpoint_texts({}) == 0


async def test_platform_message_mapping(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    question = await add(store, conv.id, "q")
    reply = await add(store, conv.id, "a very long reply", role=Role.ASSISTANT)
    await store.link_platform_message(CHAT, "100", question)
    # one reply split over two platform messages
    await store.link_platform_message(CHAT, "101", reply)
    await store.link_platform_message(CHAT, "102", reply)

    assert (await store.find_by_platform_id(CHAT, "100")).id == question  # type: ignore[union-attr]
    assert (await store.find_by_platform_id(CHAT, "101")).id == reply  # type: ignore[union-attr]
    assert (await store.find_by_platform_id(CHAT, "102")).id == reply  # type: ignore[union-attr]
    assert await store.find_by_platform_id(CHAT, "999") is None
    # the same platform id in another chat (or thread) is a different message
    assert await store.find_by_platform_id(ChatKey("slack", "C1"), "100") is None

    # re-linking an id points it at the new message
    await store.link_platform_message(CHAT, "100", reply)
    assert (await store.find_by_platform_id(CHAT, "100")).id == reply  # type: ignore[union-attr]


async def test_recover_interrupted(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    await add(store, conv.id, "q")
    streaming = await add(store, conv.id, "partial ans", role=Role.ASSISTANT, status=ReplyStatus.STREAMING)
    other = await store.create_conversation(ChatKey("web", "w"), "t")
    streaming2 = await add(store, other.id, "partial", role=Role.ASSISTANT, status=ReplyStatus.STREAMING)
    done = await add(store, other.id, "done", role=Role.ASSISTANT)

    assert await store.recover_interrupted() == 2
    for message_id in (streaming, streaming2):
        message = await store.get_message(message_id)
        assert message is not None and message.status is ReplyStatus.INTERRUPTED
        assert message.text.startswith("partial")  # the partial text is kept
    assert (await store.get_message(done)).status is ReplyStatus.COMPLETE  # type: ignore[union-attr]
    assert await store.recover_interrupted() == 0


async def test_usage_totals_by_user_and_time(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    a = await add(store, conv.id, "r1", role=Role.ASSISTANT, user_id="alice")
    b = await add(store, conv.id, "r2", role=Role.ASSISTANT, user_id="bob")
    c = await add(store, conv.id, "r3", role=Role.ASSISTANT, user_id="alice")
    await add(store, conv.id, "no usage recorded", user_id="alice")
    await store.update_message(a, usage=Usage(100, 10))
    await store.update_message(b, usage=Usage(200, 20))
    await store.update_message(c, usage=Usage(1, 2, estimated=True))

    assert await store.usage_totals() == Usage(301, 32, estimated=True)
    assert await store.usage_totals(user_id="bob") == Usage(200, 20, estimated=False)
    assert await store.usage_totals(user_id="alice") == Usage(101, 12, estimated=True)
    assert await store.usage_totals(user_id="nobody") == Usage(0, 0)
    past = datetime.now(UTC) - timedelta(hours=1)
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await store.usage_totals(since=past) == Usage(301, 32, estimated=True)
    assert await store.usage_totals(user_id="alice", since=future) == Usage(0, 0)


async def test_export_conversation_is_json_ready(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "Trip plans")
    await store.add_message(
        conv.id, role=Role.USER, parts=[TextPart("Where to?"), ImagePart(ImageRef("media:x"))], user_id="U"
    )
    reply = await add(store, conv.id, "Lisbon.", role=Role.ASSISTANT, provider="openai", model="m")
    await store.update_message(reply, usage=Usage(5, 2))

    exported = await store.export_conversation(conv.id)
    data = json.loads(json.dumps(exported))
    assert data["title"] == "Trip plans"
    assert data["chat"] == {"platform": "slack", "chat": "C1", "thread": "1700000000.000100"}
    assert [(m["role"], m["text"]) for m in data["messages"]] == [
        ("user", "Where to?"),
        ("assistant", "Lisbon."),
    ]
    assert data["messages"][0]["parts"][1] == {"type": "image", "uri": "media:x", "mime_type": "image/jpeg"}
    assert data["messages"][1]["usage"] == {"input_tokens": 5, "output_tokens": 2, "estimated": False}
    assert datetime.fromisoformat(data["created_at"]).tzinfo is not None

    empty = await store.create_conversation(CHAT, "empty")
    assert (await store.export_conversation(empty.id))["messages"] == []


async def test_add_messages_appends_a_chain_with_link_and_title_in_one_go(store: Store) -> None:
    from relaybot.core.storage import NewMessage

    conv = await store.create_conversation(CHAT, "")
    first = await add(store, conv.id, "q1")
    answer = await add(store, conv.id, "a1", role=Role.ASSISTANT)
    user, reply = await store.add_messages(
        conv.id,
        [
            NewMessage(Role.USER, [TextPart("q2")], token_count=3, user_id="u1"),
            NewMessage(Role.ASSISTANT, [TextPart("")], status=ReplyStatus.STREAMING, provider="p", model="m"),
        ],
        platform_message_id="tg-42",
        title="About q2",
    )
    assert user.parent_id == answer and reply.parent_id == user.id
    assert (reply.status, reply.provider, reply.model, user.user_id) == (
        ReplyStatus.STREAMING,
        "p",
        "m",
        "u1",
    )
    after = await store.get_conversation(conv.id)
    assert after is not None and (after.title, after.root_id, after.leaf_id) == ("About q2", first, reply.id)
    assert await texts(store, reply.id) == ["q1", "a1", "q2", ""]
    found = await store.find_by_platform_id(CHAT, "tg-42")
    assert found is not None and found.id == user.id

    # branching from an older message, into a conversation of its own
    branch = await store.create_conversation(CHAT, "b", branch_from=first)
    (alt,) = await store.add_messages(
        branch.id, [NewMessage(Role.ASSISTANT, [TextPart("a1'")])], parent_id=first
    )
    assert await texts(store, alt.id) == ["q1", "a1'"]
    # a new root
    fresh = await store.create_conversation(CHAT, "")
    (root,) = await store.add_messages(fresh.id, [NewMessage(Role.USER, [TextPart("solo")])], parent_id=None)
    got = await store.get_conversation(fresh.id)
    assert got is not None and got.root_id == root.id == got.leaf_id and got.title == ""


async def test_link_platform_messages_links_several_ids_at_once(store: Store) -> None:
    conv = await store.create_conversation(CHAT, "t")
    reply = await add(store, conv.id, "long reply", role=Role.ASSISTANT)
    await store.link_platform_messages(CHAT, ["m1", "m2", "m3"], reply)
    await store.link_platform_messages(CHAT, [], reply)  # nothing delivered: nothing to do
    for pid in ("m1", "m2", "m3"):
        found = await store.find_by_platform_id(CHAT, pid)
        assert found is not None and found.id == reply


async def test_a_write_cancelled_mid_statement_stays_a_cancellation(store: Store) -> None:
    import asyncio

    from sqlalchemy import event

    conv = await store.create_conversation(CHAT, "t")
    kept = await add(store, conv.id, "kept")
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sql(*args: object) -> None:
        loop.call_soon_threadsafe(started.set)  # SQLite runs the SQL on the store's thread

    engine = store.sql_engine
    event.listen(engine, "before_cursor_execute", on_sql)
    task = asyncio.create_task(store.link_platform_messages(ChatKey("slack", "C9"), ["p1", "p2"], kept))
    await started.wait()
    task.cancel()
    # a cancellation, not a StorageError: the reply that was cancelled must see it as one
    with pytest.raises(asyncio.CancelledError):
        await task
    event.remove(engine, "before_cursor_execute", on_sql)
    # the store keeps working, and the chat row of the rolled-back write is not cached
    later = await add(store, conv.id, "later")
    assert await texts(store, later) == ["kept", "later"]
    await store.link_platform_messages(CHAT, ["p1"], later)
    found = await store.find_by_platform_id(CHAT, "p1")
    assert found is not None and found.id == later
