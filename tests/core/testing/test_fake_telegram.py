"""The fake Bot API, driven by python-telegram-bot for real over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import telegram
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CommandHandler, MessageHandler, filters

from relaybot.core.testing.fake_telegram import (
    EntityParseError,
    FakeTelegramServer,
    FloodLimits,
    parse_html,
    parse_markdown_v2,
)
from relaybot.core.testing.server import LoopbackServer

TOKEN = "123:ABC"


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB 23 behaviour (`RetryAfter.retry_after` is a timedelta): no warnings."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


PRIVATE = 42
GROUP = -100555


class ManualClock:
    """A clock tests advance by hand, so flood-control results never depend on machine speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_bot(tg: FakeTelegramServer, token: str = TOKEN) -> telegram.Bot:
    return telegram.Bot(token, base_url=tg.bot_base_url, base_file_url=tg.file_base_url)


def seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the type will become timedelta
        warnings.simplefilter("ignore")
        value: Any = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    """A fake with flood control off; private chat 42 and supergroup -100555 exist."""
    async with FakeTelegramServer(token=TOKEN, limits=FloodLimits.disabled()) as server:
        server.add_chat(PRIVATE)
        server.add_chat(GROUP, title="Team")
        yield server


@pytest.fixture
async def bot(tg: FakeTelegramServer) -> AsyncIterator[telegram.Bot]:
    async with make_bot(tg) as client:
        yield client


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` (generous timeout: this is about correctness, not speed)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls the fake's state, no event to await
            await asyncio.sleep(0.01)


# -- identity and protocol ------------------------------------------------------------------


async def test_get_me_identity_and_wrong_token(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    assert bot.username == "relaybot_test_bot"
    assert bot.id == tg.bot_user["id"] == 123
    with pytest.raises(InvalidToken):
        async with make_bot(tg, token="999:WRONG"):
            pass
    assert tg.calls("getMe")[0].status_code == 200


async def test_unknown_method_and_wrong_token_answer_like_telegram(tg: FakeTelegramServer) -> None:
    async with httpx.AsyncClient() as client:
        unknown = await client.post(f"{tg.bot_base_url}{TOKEN}/sendTelepathy", json={})
        wrong = await client.post(f"{tg.bot_base_url}999:NOPE/getMe")
        json_body = await client.post(
            f"{tg.bot_base_url}{TOKEN}/sendMessage", json={"chat_id": PRIVATE, "text": "via json"}
        )
    assert unknown.status_code == 404
    assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert wrong.status_code == 401
    assert wrong.json()["description"] == "Unauthorized"
    assert json_body.json()["result"]["text"] == "via json"
    assert [m.text for m in tg.messages(PRIVATE)] == ["via json"]


# -- sending and editing --------------------------------------------------------------------


async def test_send_edit_and_identical_edit_is_not_modified(
    tg: FakeTelegramServer, bot: telegram.Bot
) -> None:
    sent = await bot.send_message(PRIVATE, "Hello")
    assert sent.text == "Hello" and sent.chat.type == "private"
    edited = await bot.edit_message_text("Hello, world", chat_id=PRIVATE, message_id=sent.message_id)
    assert isinstance(edited, telegram.Message) and edited.edit_date is not None

    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("Hello, world", chat_id=PRIVATE, message_id=sent.message_id)
    # same visible text with new formatting is a real change
    await bot.edit_message_text(
        "*Hello*, world", chat_id=PRIVATE, message_id=sent.message_id, parse_mode="MarkdownV2"
    )

    [message] = tg.messages(PRIVATE)
    assert (message.text, message.edit_count) == ("Hello, world", 2)
    assert message.entities == [{"type": "bold", "offset": 0, "length": 5}]
    statuses = [(r.method, r.status_code) for r in tg.chat_timeline(PRIVATE)]
    assert statuses == [
        ("sendMessage", 200), ("editMessageText", 200), ("editMessageText", 400),
        ("editMessageText", 200),
    ]  # fmt: skip


async def test_edit_deleted_or_unknown_message_and_reply_to(
    tg: FakeTelegramServer, bot: telegram.Bot
) -> None:
    user_message = tg.send_user_message(PRIVATE, "question")
    reply = await bot.send_message(
        PRIVATE, "answer", reply_parameters=telegram.ReplyParameters(user_message["message_id"])
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "question"
    assert await bot.delete_message(PRIVATE, reply.message_id)
    assert tg.messages(PRIVATE) == []
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=PRIVATE, message_id=reply.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=PRIVATE, message_id=9999)
    with pytest.raises(BadRequest, match=r"(?i)message can't be edited"):
        await bot.edit_message_text("x", chat_id=PRIVATE, message_id=user_message["message_id"])
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(777, "nobody here")


async def test_drafts_only_in_private_chats(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    assert await bot.send_message_draft(PRIVATE, draft_id=7, text="Thinking about *it*")
    assert await bot.send_message_draft(
        PRIVATE, draft_id=7, text="Thinking about *it*", parse_mode="MarkdownV2"
    )
    assert await bot.send_message_draft(PRIVATE, draft_id=7)  # empty: "Thinking…" placeholder
    drafts = tg.drafts(PRIVATE)
    assert [(d.draft_id, d.text) for d in drafts] == [
        (7, "Thinking about *it*"), (7, "Thinking about it"), (7, ""),
    ]  # fmt: skip
    assert drafts[1].entities == [{"type": "bold", "offset": 15, "length": 2}]
    with pytest.raises(BadRequest, match=r"(?i)textdraft_peer_invalid"):
        await bot.send_message_draft(GROUP, draft_id=7, text="hi")
    assert tg.drafts(GROUP) == []
    assert tg.messages(PRIVATE) == []  # a draft is not a message


async def test_kicked_chat_is_forbidden(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    tg.kick(GROUP)
    with pytest.raises(Forbidden, match="kicked from the supergroup chat"):
        await bot.send_message(GROUP, "hello?")
    tg.kick(PRIVATE)
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_chat_action(PRIVATE, "typing")
    tg.unkick(GROUP)
    assert (await bot.send_message(GROUP, "back")).chat.title == "Team"


# -- flood control ----------------------------------------------------------------------------


async def test_flood_control_per_chat_with_escalating_retry_after() -> None:
    clock = ManualClock()
    limits = FloodLimits(per_chat_interval=1.0, burst=3, group_per_minute=None,
                         global_per_second=None)  # fmt: skip
    async with FakeTelegramServer(token=TOKEN, limits=limits, clock=clock) as tg:
        tg.add_chat(PRIVATE)
        async with make_bot(tg) as bot:
            first = await bot.send_message(PRIVATE, "1")
            await bot.send_message(PRIVATE, "2")
            await bot.edit_message_text("1!", chat_id=PRIVATE, message_id=first.message_id)
            waits = []
            for _ in range(3):  # a bot that ignores retry_after gets longer and longer waits
                with pytest.raises(RetryAfter) as caught:
                    await bot.edit_message_text("x", chat_id=PRIVATE, message_id=first.message_id)
                waits.append(seconds(caught.value))
            assert waits == [1, 2, 4]
            with pytest.raises(RetryAfter):
                await bot.send_message_draft(PRIVATE, draft_id=1, text="drafts count too")

            clock.advance(9)  # past the 8 s penalty of the fourth violation
            await bot.send_message(PRIVATE, "after waiting")
    assert tg.count_429 == 4
    rejected = [r for r in tg.chat_timeline(PRIVATE) if r.status_code == 429]
    assert [r.extra["retry_after"] for r in rejected] == [1, 2, 4, 8]
    assert [m.text for m in tg.messages(PRIVATE)] == ["1!", "2", "after waiting"]


async def test_flood_control_group_and_global_limits() -> None:
    clock = ManualClock()
    limits = FloodLimits(per_chat_interval=None, group_per_minute=2, global_per_second=3)
    async with FakeTelegramServer(token=TOKEN, limits=limits, clock=clock) as tg:
        for chat_id in (GROUP, 1, 2, 3):
            tg.add_chat(chat_id)
        async with make_bot(tg) as bot:
            await bot.send_message(GROUP, "a")
            clock.advance(10)
            await bot.send_message(GROUP, "b")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "c")
            assert seconds(caught.value) == 50  # until the first one leaves the minute window

            clock.advance(5)
            for chat_id in (1, 2, 3):  # different private chats share the global budget
                await bot.send_message(chat_id, "hi")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(1, "one too many")
            assert seconds(caught.value) == 1


async def test_scripted_failure(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(PRIVATE, "x")
    assert seconds(caught.value) == 7
    assert (await bot.send_message(PRIVATE, "y")).text == "y"
    assert tg.count_429 == 1
    assert tg.calls("sendMessage")[0].chat_id == PRIVATE


# -- text rules ------------------------------------------------------------------------------


async def test_markdown_v2_and_html_formatting(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    await bot.send_message(PRIVATE, "*Hello* _world_\\! `x\\`y`", parse_mode="MarkdownV2")
    await bot.send_message(PRIVATE, "<b>1 &lt; 2</b> <a href='https://e.org'>link</a>",
                           parse_mode="HTML")  # fmt: skip
    plain, html = tg.messages(PRIVATE)
    assert plain.text == "Hello world! x`y"
    assert plain.entities == [
        {"type": "bold", "offset": 0, "length": 5},
        {"type": "italic", "offset": 6, "length": 5},
        {"type": "code", "offset": 13, "length": 3},
    ]
    assert html.text == "1 < 2 link"
    assert html.entities[1] == {"type": "text_link", "offset": 6, "length": 4,
                                "url": "https://e.org"}  # fmt: skip

    with pytest.raises(BadRequest, match=r"(?i)can't parse entities: character '\.' is reserved"):
        await bot.send_message(PRIVATE, "Done.", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)can't find end of bold entity at byte offset 4"):
        await bot.send_message(PRIVATE, "two *half", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)can't find end of pre entity"):
        await bot.send_message(PRIVATE, "```python\nprint(1)", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities: unsupported start tag"):
        await bot.send_message(PRIVATE, "a <br> b", parse_mode="HTML")
    assert len(tg.messages(PRIVATE)) == 2


async def test_explicit_entities_are_validated(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    bold = telegram.MessageEntity("bold", 2, 2)
    sent = await bot.send_message(PRIVATE, "😀ab", entities=[bold])  # emoji = 2 UTF-16 units
    assert sent.entities == (bold,)
    assert sent.parse_entity(bold) == "ab"
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(PRIVATE, "😀ab", entities=[telegram.MessageEntity("bold", 3, 2)])


async def test_length_is_counted_in_utf16_after_parsing(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    await bot.send_message(PRIVATE, "a" * 4096)
    await bot.send_message(PRIVATE, "😀" * 2048)  # 4096 units
    await bot.send_message(PRIVATE, "*" + "a" * 4096 + "*", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(PRIVATE, "😀" * 2049)  # 4098 units, 2049 characters
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(PRIVATE, "a" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(PRIVATE, "   ")
    assert len(tg.messages(PRIVATE)) == 3


def test_parsers_directly() -> None:
    assert parse_markdown_v2("```python\nprint(1)\n```") == (
        "print(1)\n", [{"type": "pre", "offset": 0, "length": 9, "language": "python"}],
    )  # fmt: skip
    assert parse_markdown_v2(">quoted\n>lines\nafter")[1] == [
        {"type": "blockquote", "offset": 0, "length": 12}
    ]
    assert parse_markdown_v2("[me](tg://user?id=5)")[1][0]["type"] == "text_mention"
    assert parse_html('<pre><code class="language-go">x</code></pre>')[1] == [
        {"type": "pre", "offset": 0, "length": 1, "language": "go"}
    ]
    for bad in ("a-b", "_open", "||spoiler", "[text](http://x"):
        with pytest.raises(EntityParseError):
            parse_markdown_v2(bad)
    with pytest.raises(EntityParseError, match="Unmatched end tag"):
        parse_html("<b>x</i>")


# -- files ---------------------------------------------------------------------------------------


async def test_photo_and_document_upload_download_round_trip(
    tg: FakeTelegramServer, bot: telegram.Bot
) -> None:
    image = png_bytes(3, 2)
    sent = await bot.send_photo(PRIVATE, photo=image, caption="*red*", parse_mode="MarkdownV2")
    size = sent.photo[-1]
    assert (size.width, size.height, sent.caption) == (3, 2, "red")
    file = await bot.get_file(size.file_id)
    assert bytes(await file.download_as_bytearray()) == image

    doc = await bot.send_document(PRIVATE, document=telegram.InputFile(b"report,1\n", filename="r.csv"))
    assert doc.document is not None and doc.document.file_name == "r.csv"
    downloaded = await (await bot.get_file(doc.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == b"report,1\n"
    assert tg.file_bytes(doc.document.file_id) == b"report,1\n"

    with pytest.raises(BadRequest, match=r"(?i)image_process_failed"):
        await bot.send_photo(PRIVATE, photo=b"not an image")


async def test_user_files_and_the_download_limit(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    small = tg.send_user_message(PRIVATE, photo=png_bytes(), caption="look")
    assert small["caption"] == "look"
    file = await bot.get_file(small["photo"][-1]["file_id"])
    assert bytes(await file.download_as_bytearray()) == png_bytes()

    big = tg.send_user_message(
        PRIVATE, document=(b"\0" * (20 * 1024 * 1024 + 1), "big.bin", "application/octet-stream")
    )
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(big["document"]["file_id"])


# -- updates: polling and webhooks -----------------------------------------------------------


async def test_long_poll_wakes_when_an_update_is_injected(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30, read_timeout=40))
    await wait_for(lambda: tg.waiting_polls == 1)
    assert not poll.done()
    tg.send_user_message(PRIVATE, "/help@relaybot_test_bot please")
    updates = await asyncio.wait_for(poll, 10)  # far below the 30 s poll timeout
    [update] = updates
    assert update.message is not None and update.message.text.startswith("/help")
    assert update.message.entities[0].type == "bot_command"
    assert update.message.entities[0].length == len("/help@relaybot_test_bot")
    # confirming with offset drops it
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()
    assert tg.pending_updates == 0


async def test_application_polling_replies_to_injected_messages(tg: FakeTelegramServer) -> None:
    async def echo(update: telegram.Update, context: Any) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def start(update: telegram.Update, context: Any) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("welcome")

    application: Application = (  # type: ignore[type-arg]
        ApplicationBuilder().token(TOKEN).base_url(tg.bot_base_url)
        .base_file_url(tg.file_base_url).build()
    )  # fmt: skip
    application.add_handler(CommandHandler("start", start))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=5)
        tg.send_user_message(PRIVATE, "/start")
        tg.send_user_message(GROUP, "hello group", chat_type="supergroup", user_id=7,
                             thread_id=3)  # fmt: skip
        await wait_for(lambda: len(tg.messages(PRIVATE)) == 1 and len(tg.messages(GROUP)) == 1)
        await application.updater.stop()
        await application.stop()
    assert tg.messages(PRIVATE)[0].text == "welcome"
    group_reply = tg.messages(GROUP)[0]
    assert group_reply.text == "echo: hello group"
    assert group_reply.thread_id == 3  # PTB replies into the forum topic
    assert tg.pending_updates == 0  # PTB confirmed what it processed


async def test_webhook_delivery_with_secret_header(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def receive(request: Request) -> Response:
        received.append((request.headers.get("x-telegram-bot-api-secret-token"),
                         await request.json()))  # fmt: skip
        return Response(status_code=200)

    receiver = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    async with LoopbackServer(receiver) as hook:
        assert await bot.set_webhook(f"{hook.url}/hook", secret_token="s3cret-token")
        info = await bot.get_webhook_info()
        assert info.url == f"{hook.url}/hook"
        sent = tg.send_user_message(PRIVATE, "via webhook")
        await wait_for(lambda: len(received) == 1)
        secret, body = received[0]
        assert secret == "s3cret-token"
        assert body["message"]["message_id"] == sent["message_id"]
        assert telegram.Update.de_json(body, bot).message.text == "via webhook"  # type: ignore[union-attr]
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates(timeout=0)
        await wait_for(lambda: tg.pending_updates == 0)
        assert await bot.delete_webhook()
    assert (await bot.get_webhook_info()).url == ""
    tg.send_user_message(PRIVATE, "back to polling")
    [update] = await bot.get_updates(timeout=0)
    assert update.message is not None and update.message.text == "back to polling"


async def test_newer_get_updates_ends_the_older_with_conflict(
    tg: FakeTelegramServer, bot: telegram.Bot
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=30, read_timeout=40))
    await wait_for(lambda: tg.waiting_polls == 1)
    async with make_bot(tg) as other:
        second = asyncio.create_task(other.get_updates(timeout=30, read_timeout=40))
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await asyncio.wait_for(first, 10)
        tg.send_user_message(PRIVATE, "for the survivor")
        assert len(await asyncio.wait_for(second, 10)) == 1


# -- commands, callbacks, chats, concurrency -------------------------------------------------


async def test_commands_callbacks_chat_info_and_actions(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    assert await bot.set_my_commands([("new", "Start a new conversation"), ("stop", "Stop")])
    assert [c.command for c in await bot.get_my_commands()] == ["new", "stop"]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Bad Command!", "x")])

    keyboard = telegram.InlineKeyboardMarkup([[telegram.InlineKeyboardButton("Go", callback_data="go")]])
    sent = await bot.send_message(PRIVATE, "Pick", reply_markup=keyboard)
    assert sent.reply_markup == keyboard
    query = tg.press_button(PRIVATE, sent.message_id, "go")
    assert await bot.answer_callback_query(query["id"], text="ok")
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("nope")

    chat = await bot.get_chat(GROUP)
    assert (chat.id, chat.type, chat.title) == (GROUP, "supergroup", "Team")
    assert await bot.send_chat_action(PRIVATE, "typing")
    with pytest.raises(BadRequest, match=r"(?i)wrong parameter action"):
        await bot.send_chat_action(PRIVATE, "dancing")
    assert [r.extra["action"] for r in tg.calls("sendChatAction")] == ["typing", "dancing"]


async def test_hundreds_of_concurrent_chats(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    chats = range(1000, 1200)
    for chat_id in chats:
        tg.add_chat(chat_id)

    async def converse(chat_id: int) -> None:
        sent = await bot.send_message(chat_id, "…")
        await bot.edit_message_text(f"answer {chat_id}", chat_id=chat_id,
                                    message_id=sent.message_id)  # fmt: skip

    await asyncio.gather(*(converse(chat_id) for chat_id in chats))
    assert all(tg.messages(c)[0].text == f"answer {c}" for c in chats)
    assert len(tg.calls("editMessageText")) == 200
    assert tg.count_429 == 0


async def test_raw_updates_and_allowed_updates_filter(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    tg.inject_update({"callback_query": {"id": "1", "from": tg.user(5), "chat_instance": "5",
                                         "data": "x"}})  # fmt: skip
    edited = tg.send_user_message(PRIVATE, "before")
    tg.inject_update({"edited_message": {**edited, "text": "after", "edit_date": 1}})
    updates = await bot.get_updates(timeout=0, allowed_updates=["message", "edited_message"])
    assert [u.effective_message.text for u in updates] == ["before", "after"]  # type: ignore[union-attr]
    assert updates[1].edited_message is not None


def test_flood_escalation_resets_after_a_quiet_window() -> None:
    from relaybot.core.testing.fake_telegram.flood import FloodControl

    clock = ManualClock()
    flood = FloodControl(
        FloodLimits(per_chat_interval=1.0, burst=1, group_per_minute=None,
                    global_per_second=None, escalation_window=60.0),
        clock,
    )  # fmt: skip
    assert flood.check(PRIVATE) is None
    assert [flood.check(PRIVATE) for _ in range(3)] == [1, 2, 4]
    assert flood.check(PRIVATE + 1) is None  # other chats are unaffected
    clock.advance(61)  # quiet for longer than the window: back to the honest wait
    assert flood.check(PRIVATE) is None
    assert flood.check(PRIVATE) == 1


def test_flood_reports_which_rule_refused() -> None:
    from relaybot.core.testing.fake_telegram.flood import FloodControl

    clock = ManualClock()
    flood = FloodControl(
        FloodLimits(per_chat_interval=1.0, burst=1, group_per_minute=2, global_per_second=3), clock
    )
    assert flood.check(PRIVATE) is None
    assert flood.check(PRIVATE) == 1  # the chat's own budget is used up
    assert flood.check(PRIVATE) == 2  # again within the window: escalated
    clock.advance(1.5)  # the chat's budget refilled, but the 2 s penalty still runs
    assert flood.check(PRIVATE) is not None
    clock.advance(10)
    assert [flood.check(chat) for chat in (-5, -6, -7)] == [None, None, None]
    assert flood.check(-8) is not None  # the 4th message of this second, across chats
    assert dict(flood.violations) == {"chat": 2, "penalty": 1, "global": 1}


async def test_timeline_records_unpack_as_tuples(tg: FakeTelegramServer, bot: telegram.Bot) -> None:
    sent = await bot.send_message(PRIVATE, "Hi <b>there</b>", parse_mode="HTML")
    t, method, chat_id, message_id, text, status, extra = tg.timeline[-1]
    assert (method, chat_id, message_id, text, status) == (
        "sendMessage", PRIVATE, sent.message_id, "Hi there", 200,
    )  # fmt: skip
    assert isinstance(t, float) and extra == {}
