"""Private chats: drafts, the final formatted message, commands, access, shutdown."""

from __future__ import annotations

import asyncio

from relaybot import ChatKey
from relaybot.core.testing.fake_telegram import FakeTelegramServer

from .conftest import texts, wait_text, wait_until

REPLY = (
    "Here is **bold** news and a snippet:\n\n```python\nprint('*not italic*')\n```\n\nDone 😀 with `code`."
)
VISIBLE = "Here is bold news and a snippet:\n\nprint('*not italic*')\n\nDone 😀 with code."


async def test_private_reply_streams_as_drafts_then_one_formatted_message(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    fake_openai.add_reply(REPLY, tokens_per_second=40, chunk_size_chars=4)
    await make_tg_bot(tg)
    user = tg.send_user_message(42, "show me")
    final = await wait_text(tg, 42, VISIBLE)

    drafts = tg.drafts(42)
    assert drafts[0].text == ""  # the "Thinking…" placeholder went out first
    assert len(drafts) >= 3  # the reply was animated, not sent in one go
    assert len({d.draft_id for d in drafts}) == 1 and drafts[0].draft_id != 0
    # every draft frame is a prefix of the raw Markdown (plain text mid-stream)
    assert all(REPLY.startswith(d.text) for d in drafts[1:])
    # exactly one real message, formatted with entities (UTF-16 offsets after the emoji)
    assert texts(tg, 42) == [VISIBLE]
    kinds = {(e["type"], e.get("language")) for e in final.entities}
    assert ("bold", None) in kinds and ("pre", "python") in kinds and ("code", None) in kinds
    code = next(e for e in final.entities if e["type"] == "code")
    assert VISIBLE.encode("utf-16-le")[2 * code["offset"] : 2 * (code["offset"] + code["length"])] == (
        "code".encode("utf-16-le")
    )
    # the answer replies to the user's message, and nothing was edited
    assert final.api["reply_to_message"]["message_id"] == user["message_id"]
    assert tg.calls("editMessageText") == []
    assert fake_openai.requests[-1].json["messages"][-1]["content"] in (
        "show me",
        [{"type": "text", "text": "show me"}],
    )


async def test_drafts_refused_fall_back_to_send_then_edit(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    tg.fail_next("sendMessageDraft", 400, "Bad Request: TEXTDRAFT_PEER_INVALID")
    fake_openai.add_reply("word " * 60 + "**end**", tokens_per_second=80, chunk_size_chars=5)
    await make_tg_bot(tg)
    tg.send_user_message(43, "go")
    final = await wait_text(tg, 43, ("word " * 60 + "end").strip())
    assert final.edit_count >= 1  # progressive edits after the fallback
    assert any(e["type"] == "bold" for e in final.entities)
    assert len(tg.messages(43)) == 1


async def test_drafts_disabled_in_config_use_edits(tg: FakeTelegramServer, make_tg_bot, fake_openai) -> None:
    fake_openai.add_reply("one two three four five six seven", tokens_per_second=30, chunk_size_chars=4)
    await make_tg_bot(tg, use_drafts=False)
    tg.send_user_message(44, "hi")
    await wait_text(tg, 44, "one two three four five six seven")
    assert tg.drafts(44) == []
    assert any(r.extra.get("action") == "typing" for r in tg.chat_timeline(44))


async def test_commands_menu_help_and_new(tg: FakeTelegramServer, make_tg_bot, fake_openai) -> None:
    app = await make_tg_bot(tg)
    published = {c["command"] for c in tg.commands()}
    registered = {c.name for c in app.registrations.commands}
    assert published == registered and {"help", "new"} <= published
    tg.send_user_message(45, "/help")
    await wait_until(lambda: any("/new" in t for t in texts(tg, 45)), what="help text")
    tg.send_user_message(45, "remember the word banana")
    await wait_text(tg, 45, "You said: remember the word banana")
    tg.send_user_message(45, "/new")
    # (the /help text above also says "new conversation": wait for /new's own answer)
    await wait_until(
        lambda: any("Started a new conversation" in t for t in texts(tg, 45)), what="/new answer"
    )
    tg.send_user_message(45, "what was the word?")
    await wait_text(tg, 45, "You said: what was the word?")
    sent = str(fake_openai.requests[-1].json["messages"])
    assert "banana" not in sent  # /new started a fresh conversation


async def test_start_shows_help(tg: FakeTelegramServer, make_tg_bot) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(46, "/start")
    await wait_until(lambda: any("/new" in t for t in texts(tg, 46)), what="help on /start")
    assert not any("Unknown command" in t for t in texts(tg, 46))


async def test_allow_list_denies_politely_once(tg: FakeTelegramServer, make_tg_bot, fake_openai) -> None:
    await make_tg_bot(tg, allowed_users=[50], denied_message="Private bot, sorry.")
    tg.send_user_message(51, "hello?")
    await wait_text(tg, 51, "Private bot, sorry.")
    tg.send_user_message(51, "hello again?")
    tg.send_user_message(50, "I am allowed")
    await wait_text(tg, 50, "You said: I am allowed")
    await asyncio.sleep(0.3)
    assert texts(tg, 51) == ["Private bot, sorry."]  # told once, not spammed, never answered
    assert all("hello" not in str(r.json) for r in fake_openai.requests)


async def test_admins_from_config(tg: FakeTelegramServer, make_tg_bot) -> None:
    app = await make_tg_bot(tg, admins=["@user60"])
    seen = []
    original = app.dispatcher.handle

    async def spy(message):  # type: ignore[no-untyped-def]
        seen.append(message)
        return await original(message)

    app.dispatcher.handle = spy  # type: ignore[method-assign]  # the host hands over through it
    tg.send_user_message(60, "a")
    tg.send_user_message(61, "b")
    await wait_until(lambda: len(seen) == 2, what="two messages")
    assert {m.user.id: m.user.is_admin for m in seen} == {"60": True, "61": False}
    assert seen[0].is_private and seen[0].platform_message_id == "1"


async def test_shutdown_during_one_hour_retry_after_is_prompt(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    fake_openai.add_reply("a reply that cannot be delivered for an hour", chunk_size_chars=50)
    app = await make_tg_bot(tg, use_drafts=False)
    for _ in range(3):
        tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 3600", retry_after=3600)
    tg.send_user_message(47, "hi")
    await wait_until(lambda: tg.count_429 >= 1, what="a 429")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await app.stop()
    assert loop.time() - started < 20  # generous: the point is "not an hour"
    await wait_until(lambda: app.connectors["telegram"].closed, what="the Bot API client closed")
    assert tg.count_429 == 1  # the pause was honoured: no retry during the hour


async def test_stop_does_not_wait_for_a_pending_long_poll(tg: FakeTelegramServer, make_tg_bot) -> None:
    app = await make_tg_bot(tg, poll_timeout=50)
    await wait_until(lambda: tg.waiting_polls == 1, what="a long poll held open")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await app.stop()
    assert loop.time() - started < 10  # far less than the 50 s poll


async def test_lone_surrogate_and_nul_are_cleaned_at_the_edge(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    """Telegram JSON may carry a lone surrogate; the message is stored and answered, cleaned."""
    app = await make_tg_bot(tg)
    tg.send_user_message(45, "hello \ud83d there\x00")
    await wait_text(tg, 45, "You said: hello \ufffd there")
    assert fake_openai.requests[-1].json["messages"][-1]["content"] in (
        "hello \ufffd there",
        [{"type": "text", "text": "hello \ufffd there"}],
    )
    conv = await app.store.active_conversation(ChatKey("telegram", "45"))
    assert conv is not None
    stored = [m.text for m in await app.store.path(conv.leaf_id)]
    assert stored == ["hello \ufffd there", "You said: hello \ufffd there"]
