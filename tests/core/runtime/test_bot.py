"""End to end through the core: dispatcher → conversations → provider (fake server) → streaming → connector.

Everything is real (SQLite, httpx to a loopback SSE server, the scheduler) except the platform,
which is the recording connector.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from relaybot import AccessDecision, Command, ReplyStatus, hookimpl
from relaybot.testing import BotHarness, FakeOpenAIServer


async def stored_path(bot: BotHarness, chat: str = "chat-1") -> list:
    app = bot.app
    conv = await app.store.active_conversation(bot.chat(chat))
    return list((await app.store.path(conv.leaf_id)).messages)


async def test_reply_streams_and_is_stored(make_bot, fake_openai: FakeOpenAIServer) -> None:
    fake_openai.add_reply("Hello there, how can I help you today?", chunk_size_chars=3)
    bot = await make_bot()
    answer = await bot.say("hi")
    assert answer == "Hello there, how can I help you today?"
    path = await stored_path(bot)
    assert [(m.role.value, m.text, m.status) for m in path] == [
        ("user", "hi", ReplyStatus.COMPLETE),
        ("assistant", "Hello there, how can I help you today?", ReplyStatus.COMPLETE),
    ]
    assert path[1].usage is not None and not path[1].usage.estimated
    request = fake_openai.requests[-1].json
    assert request["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert request["messages"][-1]["role"] == "user"


async def test_history_is_sent_and_survives_restart(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    await bot.say("my name is Ada")
    await bot.stop()
    bot2 = await make_bot()  # same database file
    await bot2.say("what is my name?")
    sent = [m["content"] for m in fake_openai.requests[-1].json["messages"]]
    assert "my name is Ada" in json.dumps(sent)
    assert len(await stored_path(bot2)) == 4


async def test_conversation_commands(make_bot, fake_openai) -> None:
    bot = await make_bot()
    await bot.say("first topic")
    assert "Started a new conversation “Cooking”" in await bot.say("/new Cooking")
    await bot.say("how to boil an egg")
    listing = await bot.say("/list")
    assert "1. first topic" in listing and "▶ 2. Cooking" in listing
    assert "Switched to 1" in await bot.say("/switch 1")
    await bot.say("back to the first")
    sent = json.dumps(fake_openai.requests[-1].json["messages"])
    assert "first topic" in sent and "boil an egg" not in sent  # no mixing between conversations
    assert "Renamed" in await bot.say("/rename Old stuff")
    assert "1. Old stuff" in await bot.say("/list")
    history = await bot.say("/history 2")
    assert history.startswith("user: back to the first") and "assistant:" in history
    md = await bot.say("/export")
    assert md.startswith("# Old stuff") and "**User**" in md
    data = json.loads(await bot.say("/export json"))
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert "Deleted 2. Cooking" in await bot.say("/delete 2")
    assert "Cooking" not in await bot.say("/list")
    assert "no conversation 7" in await bot.say("/switch 7")
    assert "/new [title]" in await bot.say("/help")
    assert "Unknown command /nope" in await bot.say("/nope")


async def test_interrupt_policy_keeps_partial_reply(make_bot, fake_openai, recording_connector) -> None:
    fake_openai.add_reply("word " * 400, tokens_per_second=40, chunk_size_chars=5)
    fake_openai.add_reply("Second answer.")
    bot = await make_bot()
    first = await bot.send("long story please", wait=False)
    await asyncio.sleep(0.6)
    await bot.send("actually, stop")
    await first
    path = await stored_path(bot)
    roles = [(m.role.value, m.status) for m in path]
    assert roles == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert 0 < len(path[1].text) < len("word " * 400)
    assert path[3].text == "Second answer."
    shown = recording_connector.messages(bot.chat())
    assert any("interrupted" in text for text in shown)


async def test_queue_policy_answers_in_order(make_bot, fake_openai) -> None:
    fake_openai.add_reply("one " * 30, tokens_per_second=100)
    fake_openai.add_reply("two")
    bot = await make_bot(config={"bot": {"busy_policy": "queue"}})
    first = await bot.send("a", wait=False)
    second = await bot.send("b", wait=False)
    await asyncio.gather(first, second)
    path = await stored_path(bot)
    assert [m.text.strip() for m in path] == ["a", ("one " * 30).strip(), "b", "two"]
    assert all(m.status == "complete" for m in path)


class SlowCommands:
    """/slownew starts a new conversation after a pause; /slowdraw just takes its time."""

    @hookimpl
    def register_commands(self, register):
        async def slownew(ctx):
            await asyncio.sleep(0.3)
            await ctx.conversations.new("fresh")
            await ctx.reply("fresh conversation")

        async def slowdraw(ctx):
            await asyncio.sleep(1.0)
            await ctx.reply("drawn")

        register(Command("slownew", "new, slowly", slownew))
        register(Command("slowdraw", "draw, slowly", slowdraw, ordered=False))


async def test_a_message_right_after_a_command_waits_for_it(make_bot, fake_openai) -> None:
    bot = await make_bot(plugins=[("slow", SlowCommands())])
    fake_openai.add_reply("noted")
    await bot.say("remember banana")
    fake_openai.add_reply("fresh answer")
    # sent back to back: the question must land in the conversation the command creates
    command = await bot.send("/slownew", wait=False)
    question = await bot.send("what was the word?", wait=False)
    await asyncio.gather(command, question)
    sent = str(fake_openai.requests[-1].json["messages"])
    assert "what was the word?" in sent and "banana" not in sent
    path = await stored_path(bot)
    assert [m.text for m in path] == ["what was the word?", "fresh answer"]


async def test_a_slow_unordered_command_does_not_hold_the_chat(make_bot, fake_openai) -> None:
    bot = await make_bot(plugins=[("slow", SlowCommands())])
    fake_openai.add_reply("quick answer")
    draw = await bot.send("/slowdraw", wait=False)
    started = asyncio.get_running_loop().time()
    await bot.send("meanwhile?", wait=True)
    assert asyncio.get_running_loop().time() - started < 0.9  # answered before the drawing ended
    assert not draw.done()
    await draw
    assert bot.connector.messages(bot.chat())[-1] == "drawn"


async def test_stop_command_interrupts(make_bot, fake_openai) -> None:
    fake_openai.add_reply("slow " * 300, tokens_per_second=30)
    bot = await make_bot()
    reply = await bot.send("go", wait=False)
    await asyncio.sleep(0.5)
    await bot.send("/stop")
    await reply
    path = await stored_path(bot)
    assert path[-1].status == ReplyStatus.INTERRUPTED and path[-1].text


async def test_switch_mid_stream_never_mixes_conversations(
    make_bot, fake_openai, recording_connector
) -> None:
    bot = await make_bot()
    await bot.say("topic A")
    await bot.say("/new B")
    fake_openai.add_reply("B-text " * 200, tokens_per_second=50)
    streaming = await bot.send("topic B please", wait=False)
    await asyncio.sleep(0.4)
    await bot.say("/switch 1")
    await streaming
    fake_openai.add_reply("A continues")
    await bot.say("more on A")
    path_a = await stored_path(bot)
    assert [m.text for m in path_a][-2:] == ["more on A", "A continues"]
    assert not any("B-text" in m.text for m in path_a)
    await bot.say("/switch 2")
    path_b = await stored_path(bot)
    assert path_b[-1].status == ReplyStatus.INTERRUPTED and path_b[-1].text.startswith("B-text")


async def test_concurrent_chats_do_not_block_or_mix(make_bot, fake_openai) -> None:
    fake_openai.default = lambda body: "echo: " + body["messages"][-1]["content"]
    bot = await make_bot()
    tasks = [await bot.send(f"message {i}", chat=f"chat-{i}", wait=False) for i in range(12)]
    await asyncio.gather(*tasks)
    for i in range(12):
        path = await stored_path(bot, f"chat-{i}")
        assert [m.text for m in path] == [f"message {i}", f"echo: message {i}"]


async def test_reply_to_old_message_branches(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    await bot.say("root question", message_id="u1")
    await bot.say("follow up", message_id="u2")
    await bot.say("another angle", message_id="u3", reply_to="u1")
    path = await stored_path(bot)
    assert [m.text for m in path if m.role.value == "user"] == ["root question", "another angle"]
    assert "2." in await bot.say("/list")  # the branch is its own conversation


class RecordingPlugin:
    """A plugin observing every per-message hook."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.replies: list = []

    @hookimpl
    def check_access(self, message):
        self.calls.append("check_access")
        if message.user.id == "mallory":
            return AccessDecision.deny("You are not on the list.")
        return None

    @hookimpl
    def build_context(self, context):
        self.calls.append("build_context")
        context.system += " Always be brief."

    @hookimpl
    def before_provider_request(self, request, provider, message):
        self.calls.append("before_provider_request")
        request.options["temperature"] = 0.1

    @hookimpl
    def after_reply(self, reply):
        self.calls.append("after_reply")
        self.replies.append(reply)


async def test_hooks_run_for_streamed_replies(make_bot, fake_openai) -> None:
    fake_openai.add_reply("streamed " * 20, tokens_per_second=200)
    plugin = RecordingPlugin()
    bot = await make_bot(plugins=[("observer", plugin)])
    await bot.say("hello")
    assert plugin.calls == ["check_access", "build_context", "before_provider_request", "after_reply"]
    body = fake_openai.requests[-1].json
    assert body["temperature"] == 0.1
    assert body["messages"][0]["content"].endswith("Always be brief.")
    record = plugin.replies[0]
    assert record.status == ReplyStatus.COMPLETE and record.text == "streamed " * 20
    assert record.platform_message_ids


async def test_denied_user_gets_one_polite_answer(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot(plugins=[("observer", RecordingPlugin())])
    assert await bot.say("hi", user="mallory") == "You are not on the list."
    assert await bot.say("hi again", user="mallory") == ""
    assert fake_openai.requests == []


class CrashingPlugin:
    @hookimpl
    def build_context(self, context):
        raise RuntimeError("plugin bug")

    @hookimpl
    def after_reply(self, reply):
        raise RuntimeError("another bug")


async def test_crashing_plugin_does_not_break_replies(make_bot, fake_openai, caplog) -> None:
    fake_openai.add_reply("still fine")
    bot = await make_bot(plugins=[("crashy", CrashingPlugin())])
    with caplog.at_level(logging.ERROR):
        assert await bot.say("hi") == "still fine"
    assert "crashy" in caplog.text and "build_context" in caplog.text


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "credentials"), (404, "not found"), (429, "rate limited"), (500, "unavailable")],
)
async def test_provider_errors_give_a_clear_message(make_bot, fake_openai, caplog, status, expected) -> None:
    fake_openai.add_error(status, "server says no", retry_after=1 if status == 429 else None)
    bot = await make_bot(config={"providers": {"fake": {"max_retries": 0}}})  # retries: test_resilience
    answer = await bot.say("hi")
    assert expected in answer.lower()
    path = await stored_path(bot)
    assert path[0].text == "hi" and path[1].status == ReplyStatus.FAILED  # the user message is kept
    assert "sk-test-key" not in caplog.text


async def test_stream_cut_midway_keeps_partial_and_says_so(make_bot, fake_openai) -> None:
    fake_openai.add_reply("The first part arrives and then the line goes dead", drop_after_chars=20)
    bot = await make_bot()
    answer = await bot.say("hi")
    assert "cut off" in answer
    path = await stored_path(bot)
    assert (
        path[1].status == ReplyStatus.INTERRUPTED
        and path[1].text == answer.split("\n")[0][: len(path[1].text)]
    )
    assert 0 < len(path[1].text) <= 20


async def test_storage_writes_per_reply_are_constant(make_bot, fake_openai) -> None:
    from sqlalchemy import event

    bot = await make_bot(config={"bot": {"checkpoint_interval": 100}})
    writes: list[str] = []

    def on_sql(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("BEGIN IMMEDIATE"):  # every SQLite write transaction
            writes.append(statement)

    engine = bot.app.store.sql_engine
    event.listen(engine, "before_cursor_execute", on_sql)
    await bot.say("first", message_id="u0")  # creates the conversation: one write more
    for n, length in enumerate((10, 2000, 30_000)):  # the longest is split over messages
        writes.clear()
        fake_openai.add_reply("x " * (length // 2), chunk_size_chars=2)
        await bot.send("go", message_id=f"u{n + 1}")
        # user message + placeholder + title; the final reply; its platform ids
        assert len(writes) == 3, (length, writes)
    event.remove(engine, "before_cursor_execute", on_sql)
    path = await stored_path(bot)
    assert [m.status for m in path] == [ReplyStatus.COMPLETE] * len(path)
    # every platform id of the long reply leads back to it (reply-to branching works)
    ids = bot.connector.message_ids(bot.chat())[-3:]
    for platform_id in ids:
        found = await bot.app.store.find_by_platform_id(bot.chat(), platform_id)
        assert found is not None and found.id == path[-1].id
    assert (await bot.app.store.find_by_platform_id(bot.chat(), "u3")).id == path[-2].id


async def test_a_failure_before_the_provider_marks_the_reply_failed(make_bot, fake_openai) -> None:
    from relaybot.core.contracts.errors import StorageError

    bot = await make_bot()
    store = bot.app.store
    real_path = store.path

    async def broken_path(*args, **kwargs):  # the context cannot be read (database trouble)
        raise StorageError("the database is unreadable right now")

    store.path = broken_path
    answer = await bot.say("hello")
    store.path = real_path
    assert "⚠️" in answer and not fake_openai.requests
    path = await stored_path(bot)
    # the user's message is kept; its reply is not left "streaming" (recovery would call it
    # interrupted as if text had been cut off): nothing was asked, so it failed
    assert [(m.text, m.status) for m in path] == [("hello", ReplyStatus.COMPLETE), ("", ReplyStatus.FAILED)]


async def test_context_trimming_tells_the_user_once(make_bot, fake_openai) -> None:
    bot = await make_bot(config={"providers": {"fake": {"context_window": 600, "max_output_tokens": 100}}})
    notices = 0
    for i in range(8):
        answer = await bot.say(f"message {i} " + "padding " * 40)
        notices += "left out" in answer
    assert notices == 1
    sent = fake_openai.requests[-1].json["messages"]
    assert "message 0 " not in json.dumps(sent) and "message 7 " in json.dumps(sent)


async def test_regenerate_answers_again_as_a_branch(make_bot, fake_openai) -> None:
    fake_openai.add_reply("first try")
    fake_openai.add_reply("second try")
    bot = await make_bot()
    await bot.say("question")
    task = await bot.app.dispatcher.regenerate(bot.chat(), bot_user())
    await task
    path = await stored_path(bot)
    assert [m.text for m in path] == ["question", "second try"]
    assert len([r for r in fake_openai.requests if r.json["messages"][-1]["content"] == "question"]) == 2


async def test_images_reach_a_vision_model_as_data_urls(make_bot, fake_openai) -> None:
    from tests.core.modelio.test_media import png

    bot = await make_bot()
    ref = await bot.app.media.save(png())
    await bot.say("what is this?", attachments=(ref,))
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    kinds = [part["type"] for part in content]
    assert kinds == ["text", "image_url"]
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    stored = (await stored_path(bot))[0]
    assert stored.parts[1].image.uri == ref.uri  # storage keeps the reference, not the bytes


async def test_model_without_vision_gets_a_note_and_the_user_is_told(make_bot, fake_openai) -> None:
    from tests.core.modelio.test_media import png

    bot = await make_bot(config={"providers": {"fake": {"vision": False}}})
    ref = await bot.app.media.save(png())
    answer = await bot.say("what is this?", attachments=(ref,))
    assert "cannot see images" in answer
    sent = json.dumps(fake_openai.requests[-1].json["messages"][-1])
    assert "data:image" not in sent and "cannot see images" in sent


def bot_user():
    from relaybot import User

    return User("user-1", "user-1")


async def test_whole_bot_on_postgresql(make_bot, fake_openai, pg_url) -> None:
    """The same flow on PostgreSQL: replies, interruption, commands, restart."""
    fake_openai.add_reply("pg " * 200, tokens_per_second=60)
    bot = await make_bot(database=pg_url)
    slow = await bot.send("tell me a long story", wait=False)
    await asyncio.sleep(0.4)
    await bot.send("/stop")
    await slow
    await bot.say("/new Second")
    await bot.say("hello postgres")
    await bot.stop()
    bot2 = await make_bot(database=pg_url)
    listing = await bot2.say("/list")
    assert "1. tell me a long story" in listing and "▶ 2. Second" in listing
    await bot2.say("/switch 1")
    path = await stored_path(bot2)
    assert path[1].status == ReplyStatus.INTERRUPTED and path[1].text.startswith("pg")


async def test_context_too_long_trims_harder_and_retries_once(make_bot, fake_openai) -> None:
    bot = await make_bot()
    for i in range(6):
        await bot.say(f"turn {i} " + "words " * 50)
    fake_openai.add_error(
        400, "This model's maximum context length is 100 tokens", code="context_length_exceeded"
    )
    fake_openai.add_reply("fits now")
    answer = await bot.say("one more")
    assert answer.startswith("fits now")
    first, second = fake_openai.requests[-2:]
    assert len(second.json["messages"]) < len(first.json["messages"])
    assert second.json["messages"][-1]["content"] == "one more"
    path = await stored_path(bot)
    assert path[-1].text == "fits now" and path[-1].status == ReplyStatus.COMPLETE


async def test_fallback_provider_answers_and_is_recorded(make_bot, fake_openai) -> None:
    fake_openai.add_error(503, "overloaded")
    fake_openai.add_reply("from the backup")
    bot = await make_bot(
        config={
            "providers": {
                "fake": {"max_retries": 0, "fallbacks": ["backup"]},
                "backup": {"type": "openai", "base_url": fake_openai.base_url, "model": "gpt-4.1-mini"},
            }
        }
    )
    assert await bot.say("hi") == "from the backup"
    reply = (await stored_path(bot))[-1]
    assert (reply.provider, reply.model, reply.status) == ("backup", "gpt-4.1-mini", ReplyStatus.COMPLETE)
    assert [r.json["model"] for r in fake_openai.requests] == ["gpt-4o-mini", "gpt-4.1-mini"]
