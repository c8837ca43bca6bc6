"""Groups and forum topics: when the bot answers, send-then-edit, topic isolation, splitting."""

from __future__ import annotations

import asyncio
import json

from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits, utf16_len

from .conftest import TOKEN, texts, wait_text, wait_until

GROUP = -1001234


async def test_group_answers_mentions_and_replies_only(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(GROUP, "people chatting among themselves", user_id=7)
    tg.send_user_message(GROUP, "@relaybot_test_bot what is up?", user_id=7)
    first = await wait_text(tg, GROUP, "You said: what is up?")  # the mention was stripped
    tg.send_user_message(GROUP, "and a follow-up", user_id=8, reply_to_message_id=first.message_id)
    await wait_text(tg, GROUP, "You said: and a follow-up")
    tg.send_user_message(GROUP, "/help@other_bot", user_id=7)
    tg.send_user_message(GROUP, "/help@relaybot_test_bot", user_id=7)
    await wait_until(lambda: any("/new" in t for t in texts(tg, GROUP)), what="help in group")
    await asyncio.sleep(0.3)
    assert len(texts(tg, GROUP)) == 3  # the chatter and the other bot's command were ignored
    asked = [json.dumps(r.json["messages"][-1]) for r in fake_openai.requests]
    assert not any("among themselves" in a for a in asked)
    # groups never use drafts (TEXTDRAFT_PEER_INVALID): replies are sent, then edited
    assert tg.calls("sendMessageDraft") == []


async def test_group_send_then_edit_with_typing(tg: FakeTelegramServer, make_tg_bot, fake_openai) -> None:
    text = " ".join(f"word{i}" for i in range(80))
    fake_openai.add_reply(text, tokens_per_second=60, chunk_size_chars=6, first_token_delay=0.2)
    await make_tg_bot(tg)
    tg.send_user_message(GROUP, "@relaybot_test_bot count", user_id=7)
    final = await wait_text(tg, GROUP, text)
    assert final.edit_count >= 2
    methods = [r.method for r in tg.chat_timeline(GROUP)]
    assert methods.index("sendChatAction") < methods.index("sendMessage")


async def test_group_trigger_all_and_commands(tg: FakeTelegramServer, make_tg_bot) -> None:
    await make_tg_bot(tg, group_trigger="commands")
    tg.send_user_message(GROUP, "@relaybot_test_bot hello", user_id=7)
    tg.send_user_message(GROUP, "/help", user_id=7)
    await wait_until(lambda: any("/new" in t for t in texts(tg, GROUP)), what="help")
    await asyncio.sleep(0.3)
    assert len(texts(tg, GROUP)) == 1


async def test_group_trigger_all(tg: FakeTelegramServer, make_tg_bot) -> None:
    await make_tg_bot(tg, group_trigger="all")
    tg.send_user_message(GROUP, "no mention at all", user_id=7)
    await wait_text(tg, GROUP, "You said: no mention at all")


async def test_forum_topics_are_separate_conversations(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg, group_trigger="all")
    tg.send_user_message(GROUP, "topic one: apples", user_id=7, thread_id=10)
    await wait_text(tg, GROUP, "You said: topic one: apples")
    tg.send_user_message(GROUP, "topic two: pears", user_id=7, thread_id=20)
    await wait_text(tg, GROUP, "You said: topic two: pears")
    tg.send_user_message(GROUP, "topic one again", user_id=7, thread_id=10)
    await wait_text(tg, GROUP, "You said: topic one again")
    history = json.dumps(fake_openai.requests[-1].json["messages"])
    assert "apples" in history and "pears" not in history
    by_text = {m.text: m.thread_id for m in tg.messages(GROUP)}
    assert by_text["You said: topic one: apples"] == 10
    assert by_text["You said: topic two: pears"] == 20
    typing_threads = {r.extra.get("thread_id") for r in tg.calls("sendChatAction")}
    assert typing_threads <= {10, 20}


async def test_long_reply_is_split_within_limits(tg: FakeTelegramServer, make_tg_bot, fake_openai) -> None:
    prose = "".join(f"Sentence number {i} is here 😀. " for i in range(150))  # ~4,800 units
    code = "\n".join(f"    value_{i} = compute({i}) * 2" for i in range(150))  # crosses the limit
    reply = prose + "\n\n```python\n" + code + "\n```\n\nThe end."
    assert len(reply) > 9000
    fake_openai.add_reply(reply, chunk_size_chars=200)
    await make_tg_bot(tg, use_drafts=False)
    tg.send_user_message(48, "long please")
    await wait_until(lambda: any(t.endswith("The end.") for t in texts(tg, 48)), 30, "last part")
    await asyncio.sleep(0.3)
    messages = tg.messages(48)
    assert len(messages) >= 3
    assert all(utf16_len(m.text) <= 4096 for m in messages)
    joined = "\n".join(m.text for m in messages)
    for i in (0, 77, 149):
        assert f"Sentence number {i} is here" in joined
    for i in (0, 75, 149):
        assert f"value_{i} = compute({i}) * 2" in joined
    # the code block continues in the next message as code (fence closed and reopened)
    pres = [m for m in messages if any(e["type"] == "pre" for e in m.entities)]
    assert len(pres) >= 2
    assert all(e.get("language") == "python" for m in pres for e in m.entities if e["type"] == "pre")


async def test_three_people_mention_the_bot_at_once_and_all_get_their_answers(
    make_tg_bot, fake_openai
) -> None:
    # Telegram's group rules (a per-chat interval with a small burst, a per-minute cap per
    # group), enforced by the fake five times faster than Telegram so the test stays short;
    # the connector is configured at the same scale
    limits = FloodLimits(per_chat_interval=0.2, burst=3, group_per_minute=300, global_per_second=30)
    topics = {7: "tides", 8: "comets", 9: "ferns"}

    def answer(body: dict) -> str:
        question = body["messages"][-1]["content"]
        return f"All about {question.rsplit(' ', 1)[-1]}: " + "it is a long and careful answer " * 4

    fake_openai.default = answer
    fake_openai.default_tokens_per_second = 40
    async with FakeTelegramServer(token=TOKEN, limits=limits) as tg:
        await make_tg_bot(tg, group_interval=0.25, private_interval=0.25, global_rate=25)
        asked = {
            user: tg.send_user_message(GROUP, f"@relaybot_test_bot tell me about {topic}", user_id=user)
            for user, topic in topics.items()
        }
        finals = {}
        for user, topic in topics.items():
            expected = f"All about {topic}: " + ("it is a long and careful answer " * 4).strip()
            finals[user] = await wait_text(tg, GROUP, expected, timeout=30)
        assert tg.count_429 == 0
        for user, final in finals.items():  # each answer is a reply to its own question
            assert final.api["reply_to_message"]["message_id"] == asked[user]["message_id"]
            assert final.edit_count >= 1  # streamed, not sent whole
        # answered at the same time: every answer had started before the first one was final
        started = [
            min(r.t for r in tg.calls("sendMessage") if r.message_id == final.message_id)
            for final in finals.values()
        ]
        last_edits = [
            max(r.t for r in tg.calls("editMessageText") if r.message_id == final.message_id)
            for final in finals.values()
        ]
        assert max(started) < min(last_edits)
        typing = len(tg.calls("sendChatAction"))
        await asyncio.sleep(1.0)  # longer than a typing refresh
        assert len(tg.calls("sendChatAction")) == typing, "a typing indicator outlived the answers"
