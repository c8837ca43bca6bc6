"""Webhook mode, start-up errors, bad input and flood behaviour."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from relaybot import ConfigError
from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits

from .conftest import TOKEN, texts, wait_text, wait_until


async def test_webhook_mode_end_to_end_and_secret_checked(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    app = await make_tg_bot(tg, mode="webhook", webhook_port=0, secret_token="s3cret-Token_1")
    connector = app.connectors["telegram"]
    assert connector.webhook is not None
    assert tg.updates.webhook_url == connector.webhook.local_url
    tg.send_user_message(80, "via webhook")
    await wait_text(tg, 80, "You said: via webhook")
    assert tg.webhook_deliveries[-1].status == 200
    assert tg.calls("getUpdates") == []

    update = {"update_id": 999, "message": {
        "message_id": 5, "date": 0, "chat": {"id": 80, "type": "private", "first_name": "U"},
        "from": tg.user(80), "text": "forged message"}}  # fmt: skip
    async with httpx.AsyncClient() as client:
        wrong = await client.post(connector.webhook.local_url, json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})  # fmt: skip
        missing = await client.post(connector.webhook.local_url, json=update)
    assert (wrong.status_code, missing.status_code) == (403, 403)
    await asyncio.sleep(0.3)
    assert not any("forged" in t for t in texts(tg, 80))
    assert connector.webhook.rejected == 2


async def test_bad_token_is_a_clear_config_error(tg: FakeTelegramServer, make_tg_bot, caplog) -> None:
    with pytest.raises(ConfigError) as info:
        await make_tg_bot(tg, token="999:WRONG-secret-token")
    message = str(info.value)
    assert "connectors.telegram.token" in message and "WRONG-secret-token" not in message
    assert "WRONG-secret-token" not in caplog.text


async def test_bad_input_is_ignored_without_errors(
    tg: FakeTelegramServer, make_tg_bot, fake_openai, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="relaybot")
    await make_tg_bot(tg)
    tg.send_user_message(81, "hello")
    first = await wait_text(tg, 81, "You said: hello")
    chat = {"id": 81, "type": "private", "first_name": "U"}
    tg.inject_update({"edited_message": {"message_id": 1, "date": 0, "edit_date": 1, "chat": chat,
                                         "from": tg.user(81), "text": "hello (edited)"}})  # fmt: skip
    channel = {"id": -100777, "type": "channel", "title": "C"}
    tg.inject_update({"channel_post": {"message_id": 3, "date": 0, "text": "news", "chat": channel}})
    tg.press_button(81, first.message_id, "a button we never made")
    group = {"id": -555, "type": "group", "title": "G"}
    tg.inject_update({"message": {"message_id": 9, "date": 0, "chat": group, "from": tg.user(81),
                                  "migrate_to_chat_id": -100555}})  # fmt: skip
    tg.inject_update(
        {
            "message": {
                "message_id": 4,
                "date": 0,
                "chat": chat,
                "from": {"id": 5, "is_bot": True, "first_name": "B"},
                "text": "bot",
            }
        }
    )
    tg.send_user_message(81, "still alive?")
    await wait_text(tg, 81, "You said: still alive?")
    assert [m.text for m in tg.messages(81)] == [first.text, "You said: still alive?"]
    assert len(fake_openai.requests) == 2
    assert "edited message" in caplog.text and "migrated to supergroup -100555" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_kicked_from_group_gives_up_quietly(tg: FakeTelegramServer, make_tg_bot, caplog) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(-1009, "@relaybot_test_bot hi", user_id=7)
    await wait_text(tg, -1009, "You said: hi")
    tg.kick(-1009)
    tg.send_user_message(-1009, "@relaybot_test_bot again", user_id=7)
    await wait_until(lambda: "can no longer write there" in caplog.text, what="kick warning")
    tg.send_user_message(82, "other chats still work")
    await wait_text(tg, 82, "You said: other chats still work")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_not_modified_and_deleted_placeholder_are_handled(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    text = " ".join(f"token{i}" for i in range(60))
    fake_openai.add_reply(text, tokens_per_second=60, chunk_size_chars=8)
    tg.fail_next("editMessageText", 400, "Bad Request: message is not modified: specified new message "
                 "content and reply markup are exactly the same")  # fmt: skip
    tg.fail_next("editMessageText", 400, "Bad Request: message to edit not found")
    await make_tg_bot(tg, use_drafts=False)
    tg.send_user_message(83, "go")
    await wait_text(tg, 83, text)
    assert sum(1 for m in tg.messages(83) if m.text == text) == 1


async def test_polling_survives_network_errors(tg: FakeTelegramServer, make_tg_bot, caplog) -> None:
    await make_tg_bot(tg)
    tg.fail_next("getUpdates", 502, "Bad Gateway")
    tg.fail_next("getUpdates", 500, "Internal Server Error")
    tg.send_user_message(84, "after the outage")
    await wait_text(tg, 84, "You said: after the outage", timeout=20)
    assert "polling failed" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("relaybot")]


@pytest.mark.slow
async def test_flood_limits_are_respected_and_every_reply_completes(make_tg_bot, fake_openai) -> None:
    """Default pacing against the fake's default flood rules, with a fast provider."""
    answers = {f"k{n}": f"Private answer {n}: " + "lorem ipsum dolor sit amet " * 20 for n in range(6)}
    answers |= {"gA": "Group answer A: " + "alpha beta " * 40, "gB": "Group answer B: " + "gamma delta " * 40}
    fake_openai.default = lambda request: answers[str(request["messages"][-1]["content"]).split()[-1]]
    async with FakeTelegramServer(token=TOKEN, limits=FloodLimits()) as server:
        app = await make_tg_bot(server, private_interval=1.0, group_interval=3.0, global_rate=30)
        for n in range(6):
            server.send_user_message(100 + n, f"question k{n}")
        server.send_user_message(-100500, "@relaybot_test_bot question gA", user_id=9)
        server.send_user_message(-100501, "@relaybot_test_bot question gB", user_id=10)
        for n in range(6):
            await wait_text(server, 100 + n, answers[f"k{n}"].strip(), timeout=60)
        await wait_text(server, -100500, answers["gA"].strip(), timeout=90)
        await wait_text(server, -100501, answers["gB"].strip(), timeout=90)
        for chat_id in [*range(100, 106), -100500, -100501]:
            records = [r for r in server.chat_timeline(chat_id)
                       if r.method in ("sendMessage", "editMessageText", "sendMessageDraft")]  # fmt: skip
            for i, record in enumerate(records):
                if record.status_code == 429:  # honoured: nothing more until the pause ended
                    resumed = record.t + record.extra["retry_after"] - 0.05
                    assert all(later.t >= resumed for later in records[i + 1 :])
            finals = [m.text for m in server.messages(chat_id)]
            assert len(finals) == len(set(finals))  # each reply delivered once
        assert server.count_429 == 0, [r for r in server.timeline if r.status_code == 429]
        await app.stop()
