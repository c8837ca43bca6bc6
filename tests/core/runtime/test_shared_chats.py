"""Nothing lost, everyone answered: receipt storage, turns per person, shared-chat branches.

Each test drives the real dispatcher, turns, scheduler and storage through the recording
connector (a platform that enforces its pacing) and a real fake OpenAI server over HTTP.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaybot import ChatKey, StreamPolicy
from relaybot.core.contracts.models import ReplyStatus, Role
from relaybot.testing import RecordingConnector

#: a platform that paces groups, shows typing and must see it stop
POLICY = StreamPolicy(
    max_length=4096, private_interval=0.02, group_interval=0.05, global_rate=0.0, typing_interval=0.1
)


@pytest.fixture
def recording_connector() -> RecordingConnector:
    return RecordingConnector(policy=POLICY)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each test runs on SQLite and on a fresh PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def make_bot(make_bot: Any, database: str) -> Any:
    """The kit's ``make_bot`` on this module's database."""

    async def factory(**kwargs: Any) -> Any:
        kwargs.setdefault("database", database)
        return await make_bot(**kwargs)

    return factory


def long_answer(body: dict[str, Any]) -> str:
    """The fake's answer: names the question, long enough to stream for a while."""
    question = body["messages"][-1]["content"]
    if isinstance(question, list):
        question = "".join(part.get("text", "") for part in question)
    return f"About {question}: " + "more words " * 12


def user_texts(request: Any) -> list[str]:
    """The user turns a provider request carried (text only)."""
    out = []
    for message in request.json["messages"]:
        if message["role"] == "user":
            content = message["content"]
            out.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
    return out


async def children(bot: Any, chat: ChatKey) -> dict[str, list[Any]]:
    """Every stored user message of ``chat`` (by text) with the replies stored under it,
    whichever branch they are on."""
    import sqlalchemy as sa

    from relaybot.core.storage.schema import chats, messages

    def rows(conn: sa.Connection) -> list[Any]:
        return list(
            conn.execute(
                sa.select(messages.c.id, messages.c.parent_id, messages.c.role)
                .join(chats, chats.c.id == messages.c.chat_id)
                .where(chats.c.platform == chat.platform, chats.c.chat == chat.chat)
                .order_by(messages.c.id)
            )
        )

    store = bot.app.store
    found: dict[str, list[Any]] = {}
    by_id = {}
    for row in await store.run_sync(rows):
        by_id[row.id] = await store.get_message(row.id)
    for message in by_id.values():
        if message.role == Role.USER:
            assert message.text not in found, f"{message.text!r} stored twice"
            found[message.text] = []
    for message in by_id.values():
        if message.role == Role.ASSISTANT and message.parent_id in by_id:
            found[by_id[message.parent_id].text].append(message)
    return found


async def until(condition: Any, timeout: float = 15.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


async def no_more_typing(connector: RecordingConnector, chat: ChatKey) -> None:
    """Assert no typing indicator goes out any more (several refresh intervals pass)."""
    before = connector.count("typing", chat)
    await asyncio.sleep(POLICY.typing_interval * 4)
    assert connector.count("typing", chat) == before, "a typing indicator outlived its reply"


async def test_three_people_mention_the_bot_at_once_and_all_are_answered(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.default = long_answer
    fake_openai.default_tokens_per_second = 40
    bot = await make_bot()
    group = bot.chat("group")
    people = {"alice": "tides", "bob": "comets", "carol": "ferns"}
    tasks = [
        await bot.send(topic, chat="group", user=user, private=False, message_id=f"m-{user}", wait=False)
        for user, topic in people.items()
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    # every message stored once, each with its own complete answer
    stored = await children(bot, group)
    assert sorted(stored) == sorted(people.values())
    for topic, replies in stored.items():
        assert [r.status for r in replies] == [ReplyStatus.COMPLETE]
        assert replies[0].text == f"About {topic}: " + "more words " * 12
    # contexts never mixed: each request saw only its own person's question
    assert sorted(tuple(user_texts(r)) for r in fake_openai.requests) == sorted((t,) for t in people.values())
    # answered at the same time: all three streams began before the first one ended
    finals = [op.t for op in recording_connector.timeline if op.final and op.op in ("send", "edit")]
    firsts = {}
    for op in recording_connector.timeline:
        if op.op == "send":
            firsts.setdefault(op.message_id, op.t)
    first_sends = sorted(firsts.values())[:3]
    assert max(first_sends) < min(finals)
    # each answer is a platform reply to the message it answers
    replies_to = {op.reply_to for op in recording_connector.ops(group, "send")}
    assert replies_to == {f"m-{user}" for user in people}
    assert recording_connector.rejected == []
    await no_more_typing(recording_connector, group)


async def test_a_second_message_before_the_first_is_answered_keeps_both(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.default_tokens_per_second = 40
    bot = await make_bot()  # busy_policy = "interrupt"
    chat = bot.chat()
    first = await bot.send("Hi there", message_id="p1", wait=False)
    second = await bot.send("what is the capital of France?", message_id="p2", wait=False)
    await asyncio.wait_for(asyncio.gather(first, second), 30)
    path = await bot.app.store.path((await bot.app.store.active_conversation(chat)).leaf_id)
    users = [m.text for m in path if m.role == Role.USER]
    assert users == ["Hi there", "what is the capital of France?"]
    assert all(m.status != ReplyStatus.PENDING and m.status != ReplyStatus.STREAMING for m in path)
    # the answer that went out read both messages, as one user turn
    last = fake_openai.requests[-1]
    assert user_texts(last) == ["Hi there\n\nwhat is the capital of France?"]
    # nothing half-shown was left behind: one answer, no empty "interrupted" message
    shown = recording_connector.messages(chat)
    assert shown[-1].startswith("You said: Hi there")
    assert not any("interrupted" in text and "You said" not in text for text in shown)
    await no_more_typing(recording_connector, chat)


async def test_a_redelivered_message_is_answered_once(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    await bot.send("once please", message_id="same-id")
    await bot.send("once please", message_id="same-id")
    assert len(fake_openai.requests) == 1
    assert recording_connector.messages(bot.chat()) == ["You said: once please"]


async def test_the_cap_queues_the_rest_in_arrival_order_with_typing(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.default = long_answer
    fake_openai.default_tokens_per_second = 40
    bot = await make_bot(config={"bot": {"max_concurrent_replies": 2}})
    group = bot.chat("group")
    tasks = [
        await bot.send(f"q{i}", chat="group", user=f"u{i}", private=False, message_id=f"m{i}", wait=False)
        for i in range(4)
    ]
    # all four are stored before anything is answered: the two over the cap wait, pending
    pending = await bot.app.store.pending_messages()
    assert sorted(p.message.text for p in pending) == ["q2", "q3"]
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    arrivals = {user_texts(r)[-1]: r.received_at for r in fake_openai.requests}
    ended = sorted(op.t for op in recording_connector.timeline if op.final)
    # q2 started only once one of q0/q1 had ended, q3 after another one
    assert arrivals["q2"] >= ended[0] and arrivals["q3"] >= ended[1]
    assert max(arrivals["q0"], arrivals["q1"]) < ended[0]
    # the queued ones showed typing while they waited
    first_send = {op.reply_to: op.t for op in recording_connector.ops(group, "send")}
    typing = [op.t for op in recording_connector.ops(group, "typing")]
    assert any(t < first_send["m3"] and t > first_send["m0"] for t in typing)
    assert await bot.app.store.pending_messages() == []
    await no_more_typing(recording_connector, group)


async def test_a_reply_to_an_answer_continues_that_branch(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    group = bot.chat("group")
    await bot.send("tell me about owls", chat="group", user="alice", private=False, message_id="a1")
    await bot.send("tell me about bees", chat="group", user="bob", private=False, message_id="b1")
    owl_answer = next(op.message_id for op in recording_connector.ops(group, "send") if op.reply_to == "a1")
    await bot.send(
        "and how long do they live?", chat="group", user="carol", private=False, reply_to=owl_answer,
        message_id="c1",
    )  # fmt: skip
    assert user_texts(fake_openai.requests[-1]) == ["tell me about owls", "and how long do they live?"]
    # a plain message continues from the newest finished exchange
    await bot.send("thanks!", chat="group", user="dave", private=False, message_id="d1")
    assert "thanks!" in user_texts(fake_openai.requests[-1])


async def test_stop_in_a_group_stops_only_the_senders_reply(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.default = long_answer
    fake_openai.default_tokens_per_second = 20
    bot = await make_bot()
    group = bot.chat("group")
    alice = await bot.send("owls", chat="group", user="alice", private=False, message_id="a1", wait=False)
    bob = await bot.send("bees", chat="group", user="bob", private=False, message_id="b1", wait=False)
    await until(lambda: len(recording_connector.ops(group, "send")) >= 2)
    await bot.send("/stop", chat="group", user="alice", private=False, message_id="a2")
    await asyncio.wait_for(asyncio.gather(alice, bob), 30)
    stored = await children(bot, group)
    assert stored["owls"][0].status == ReplyStatus.INTERRUPTED
    assert stored["bees"][0].status == ReplyStatus.COMPLETE


async def test_a_provider_that_goes_silent_after_a_burst_is_checkpointed(
    make_bot, fake_openai, recording_connector
) -> None:
    burst = "x" * 600
    fake_openai.add_reply(
        burst + " and the rest", chunk_size_chars=[burst, " and the rest"], tokens_per_second=0.05
    )
    bot = await make_bot()  # checkpoint_interval 0.2 s in the harness
    task = await bot.send("go", wait=False)
    store = bot.app.store
    for _ in range(300):
        conv = await store.active_conversation(bot.chat())
        leaf = await store.get_message(conv.leaf_id) if conv and conv.leaf_id else None
        if leaf is not None and leaf.role == Role.ASSISTANT and leaf.text == burst:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the 600 characters shown were never checkpointed")
    assert leaf.status == ReplyStatus.STREAMING
    await bot.send("/stop")
    await task


async def test_runaway_streams_are_capped_by_tokens_and_by_time(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.add_reply("endless " * 2000, chunk_size_chars=64)
    bot = await make_bot(config={"providers": {"fake": {"max_output_tokens": 100}}})
    await bot.send("talk forever")
    conv = await bot.app.store.active_conversation(bot.chat())
    reply = await bot.app.store.get_message(conv.leaf_id)
    assert reply.status == ReplyStatus.INTERRUPTED
    assert 0 < len(reply.text) < 1000  # 100 tokens of "endless " (2 tokens each), not 16,000 chars
    shown = recording_connector.messages(bot.chat())
    assert "maximum length of 100 tokens" in shown[-1]

    fake_openai.add_reply("slow " * 500, tokens_per_second=20)
    await bot.stop()
    bot2 = await make_bot(config={"bot": {"max_reply_seconds": 0.5}})
    await asyncio.wait_for(bot2.send("talk slowly", chat="chat-2"), 20)
    conv = await bot2.app.store.active_conversation(bot2.chat("chat-2"))
    reply = await bot2.app.store.get_message(conv.leaf_id)
    assert reply.status == ReplyStatus.INTERRUPTED
    assert "took longer than 0.5 seconds" in recording_connector.messages(bot2.chat("chat-2"))[-1]


async def test_a_failed_reply_keeps_its_reason_and_stays_out_of_context(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.add_error(400, "this request is not acceptable")
    bot = await make_bot()
    await bot.send("first try")
    conv = await bot.app.store.active_conversation(bot.chat())
    failed = await bot.app.store.get_message(conv.leaf_id)
    assert failed.status == ReplyStatus.FAILED
    assert failed.text.startswith("⚠️") and failed.text == recording_connector.messages(bot.chat())[-1]
    await bot.send("second try")
    roles = [m["role"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"]
    assert roles == ["user"]  # both questions as one turn, no empty or failed assistant turn
    assert user_texts(fake_openai.requests[-1]) == ["first try\n\nsecond try"]


async def test_queued_messages_outlive_a_shutdown_and_are_answered_after_the_restart(
    make_bot, fake_openai, recording_connector, database
) -> None:
    from relaybot.testing import BotHarness

    fake_openai.add_reply("slow " * 200, tokens_per_second=20)
    bot = await make_bot(config={"bot": {"busy_policy": "queue"}})
    chat = bot.chat()
    first = await bot.send("one", message_id="1", wait=False)
    await bot.send("two", message_id="2", wait=False)
    await bot.send("three", message_id="3", wait=False)
    await until(lambda: bool(recording_connector.ops(chat, "send")))
    await asyncio.wait_for(bot.stop(), 8)
    await first
    assert len(fake_openai.requests) == 1, "shutdown started a provider request for a queued message"

    restarted = BotHarness(
        base_url=fake_openai.base_url,
        connector=RecordingConnector(policy=POLICY),
        database=database,
        plugins=[],
        overrides={"bot": {"busy_policy": "queue"}},
    )
    await restarted.start()  # answers what the previous run left pending
    try:
        store = restarted.app.store
        for _ in range(500):
            if not await store.pending_messages() and len(fake_openai.requests) == 3:
                conv = await store.active_conversation(chat)
                leaf = await store.get_message(conv.leaf_id)
                if leaf.status == ReplyStatus.COMPLETE and leaf.text == "You said: three":
                    break
            await asyncio.sleep(0.02)
        path = await store.path((await store.active_conversation(chat)).leaf_id)
        assert [(m.role.value, m.status.value) for m in path] == [
            ("user", "complete"),
            ("assistant", "interrupted"),
            ("user", "complete"),
            ("assistant", "complete"),
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        assert [m.text for m in path][2:] == ["two", "You said: two", "three", "You said: three"]
        assert 0 < len(path[1].text) < len("slow " * 200)
    finally:
        await restarted.stop()


async def test_a_burst_in_a_group_under_interrupt_is_answered_with_every_message(
    make_bot, fake_openai, recording_connector
) -> None:
    """One person's quick messages in a group stay one chain (found by the connector contract:
    each was placed under the conversation's leaf, siblings, and the middle ones were lost)."""
    fake_openai.default_tokens_per_second = 20  # each answer takes a while: the next message stops it
    bot = await make_bot()  # busy_policy = "interrupt"
    chat = bot.chat()
    burst = [f"part {i}" for i in range(4)]
    tasks = [await bot.send(text, user="u7", private=False, message_id=f"g{i}", wait=False)
             for i, text in enumerate(burst)]  # fmt: skip
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    path = await bot.app.store.path((await bot.app.store.active_conversation(chat)).leaf_id)
    assert [m.text for m in path if m.role == Role.USER] == burst  # every message on the path
    assert user_texts(fake_openai.requests[-1]) == ["\n\n".join(burst)]  # and read by the answer
