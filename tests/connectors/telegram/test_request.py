"""PTB's HTTP layer on aiohttp (``connectors/telegram/request.py``), used through a real
``telegram.Bot`` against the fake Bot API and against sockets that misbehave."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator

import pytest
import telegram
from PIL import Image
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from relaybot.connectors.telegram.request import AiohttpRequest
from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits

TOKEN = "4242:REQUEST-TEST-SECRET"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(token=TOKEN, limits=FloodLimits.disabled()) as server:
        yield server


def make_bot(base_url: str, **timeouts: float) -> telegram.Bot:
    return telegram.Bot(
        TOKEN,
        base_url=base_url,
        base_file_url=base_url.replace("/bot", "/file/bot"),
        request=AiohttpRequest(connection_pool_size=8, **timeouts),
    )


async def test_calls_uploads_and_downloads_through_aiohttp(tg: FakeTelegramServer):
    tg.add_chat(77)
    async with make_bot(tg.bot_base_url) as bot:
        me = await bot.get_me()
        assert me.is_bot
        sent = await bot.send_message(77, "héllo *world*", parse_mode="Markdown")
        assert sent.text == "héllo world"  # url-encoded form survived non-ASCII and markup
        image = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(image, "PNG")
        photo = await bot.send_photo(77, image.getvalue(), caption="a red square")
        assert photo.caption == "a red square"  # multipart upload with a text field
        file = await bot.get_file(photo.photo[-1].file_id)
        data = await file.download_as_bytearray()
        assert bytes(data) == tg.file_bytes(photo.photo[-1].file_id)
    assert [r.method for r in tg.chat_timeline(77)] == ["sendMessage", "sendPhoto"]


async def test_api_errors_reach_ptb_as_its_own_exceptions(tg: FakeTelegramServer):
    tg.add_chat(78)
    tg.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    tg.fail_next("sendMessage", 400, "Bad Request: chat not found")
    async with make_bot(tg.bot_base_url) as bot:
        with pytest.raises(RetryAfter) as limited:
            await bot.send_message(78, "x")
        retry_after = limited.value.retry_after  # int, or a timedelta with PTB_TIMEDELTA set
        assert getattr(retry_after, "total_seconds", lambda: retry_after)() == 7
        with pytest.raises(BadRequest, match=r"(?i)chat not found"):
            await bot.send_message(78, "x")


async def test_connection_refused_is_a_network_error_without_the_token():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bot = make_bot(f"http://127.0.0.1:{port}/bot")
    await bot.request.initialize()
    try:
        with pytest.raises(NetworkError) as info:
            await bot.send_message(1, "x")
        assert not isinstance(info.value, TimedOut)
        assert "cannot connect" in str(info.value)
        assert TOKEN not in str(info.value) and "REQUEST-TEST-SECRET" not in repr(info.value)
    finally:
        await bot.request.shutdown()


async def test_silent_server_times_out_and_a_dropped_answer_is_a_network_error():
    accepted: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if len(accepted) == 0:
            accepted.append(writer)  # say nothing: the client must time out
            return
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"ok":')
        await writer.drain()
        writer.close()  # cut off in the middle of the body

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bot = make_bot(f"http://127.0.0.1:{port}/bot", read_timeout=0.3)
    await bot.request.initialize()
    try:
        with pytest.raises(TimedOut) as timed_out:
            await bot.send_message(1, "x")
        with pytest.raises(NetworkError) as dropped:
            await bot.send_message(1, "x")
        assert not isinstance(dropped.value, TimedOut)
        for err in (timed_out.value, dropped.value):
            assert "REQUEST-TEST-SECRET" not in str(err)
    finally:
        await bot.request.shutdown()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_shutdown_then_initialize_works_again(tg: FakeTelegramServer):
    request = AiohttpRequest(connection_pool_size=2)
    bot = telegram.Bot(TOKEN, base_url=tg.bot_base_url, request=request)
    await bot.initialize()
    await bot.shutdown()
    await bot.initialize()  # an application restarted in the same process
    assert (await bot.get_me()).is_bot
    await bot.shutdown()
