"""Images and videos in (photos, videos, video notes, documents, size limits), images out,
unsupported media."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from relaybot.core.testing.fake_telegram import FakeTelegramServer

from .conftest import texts, wait_text, wait_until


def png(size: int = 32, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def image_parts(request_json: dict) -> list[dict]:
    content = request_json["messages"][-1]["content"]
    return (
        [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
        if isinstance(content, list)
        else []
    )


async def test_photo_reaches_the_provider_as_an_image_part(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(70, photo=png(), caption="what colour is this?")
    await wait_text(tg, 70, "You said: what colour is this?")
    parts = image_parts(fake_openai.requests[-1].json)
    assert len(parts) == 1
    assert parts[0]["image_url"]["url"].startswith("data:image/")
    assert any(r.method == "getFile" for r in tg.timeline)


async def test_image_document_is_read_and_other_documents_are_declined(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(71, document=(png(color="blue"), "diagram.png", "image/png"), caption="see file")
    await wait_text(tg, 71, "You said: see file")
    assert len(image_parts(fake_openai.requests[-1].json)) == 1
    requests_before = len(fake_openai.requests)
    tg.send_user_message(71, document=(b"%PDF-1.4 ...", "paper.pdf", "application/pdf"))
    declined = "only read text, images and videos"
    await wait_until(lambda: any(declined in t for t in texts(tg, 71)), what="decline")
    assert len(fake_openai.requests) == requests_before


async def test_oversized_document_is_refused_before_download(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg, max_download_mb=0.01)  # 10 KB
    big = png(size=600)  # noisy enough? make sure it is over the limit
    big = big + b"\0" * max(0, 20_000 - len(big))
    tg.send_user_message(72, document=(big, "huge.png", "image/png"), caption="look")
    await wait_until(lambda: any("too big" in t for t in texts(tg, 72)), what="refusal")
    assert not any(r.method == "getFile" for r in tg.timeline)  # refused from the size alone
    assert fake_openai.requests == []


async def test_not_an_image_is_refused_with_the_media_store_reason(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(73, document=(b"not really a png", "fake.png", "image/png"))
    await wait_until(lambda: any("not an image" in t for t in texts(tg, 73)), what="refusal")
    assert fake_openai.requests == []


async def test_voice_and_stickers_get_a_polite_reply(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    await make_tg_bot(tg)
    tg.send_user_message(74, "hi")  # registers the chat with the fake
    await wait_text(tg, 74, "You said: hi")
    base = {"chat": {"id": 74, "type": "private", "first_name": "U"}, "from": tg.user(74), "date": 0}
    voice = {"file_id": "v1", "file_unique_id": "uv1", "duration": 3}
    tg.inject_update({"message": {**base, "message_id": 100, "voice": voice}})
    await wait_until(lambda: any("voice or audio" in t for t in texts(tg, 74)), what="voice reply")
    sticker = {
        "file_id": "s1",
        "file_unique_id": "us1",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
    }
    tg.inject_update({"message": {**base, "message_id": 101, "sticker": sticker}})
    await wait_until(lambda: any("stickers" in t for t in texts(tg, 74)), what="sticker reply")
    assert len(fake_openai.requests) == 1  # only "hi" went to the model


async def test_videos_and_video_notes_reach_the_provider_as_frames(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    pytest.importorskip("av")
    from relaybot.core.testing.video import make_video

    await make_tg_bot(tg)
    tg.send_user_message(77, video=make_video(seconds=2), caption="what happens?")
    # the fake model echoes the text parts: the question, then the video header and frame times
    await wait_until(lambda: any(t.startswith("You said: what happens?[video, 2.0 s") for t in texts(tg, 77)),
                     what="the video's answer")  # fmt: skip
    assert len(image_parts(fake_openai.requests[-1].json)) == 8
    tg.send_user_message(78, video_note=make_video(seconds=1, size=(96, 96)))
    await wait_until(lambda: len(fake_openai.requests) == 2, what="the video note's request")
    assert len(image_parts(fake_openai.requests[-1].json)) == 8
    clip = make_video(seconds=1, codec="libvpx", container="webm")
    tg.send_user_message(79, document=(clip, "clip.webm", "video/webm"), caption="and this file?")
    await wait_until(lambda: any(t.startswith("You said: and this file?[video") for t in texts(tg, 79)),
                     what="the video file's answer")  # fmt: skip
    assert len(image_parts(fake_openai.requests[-1].json)) == 8


async def test_a_damaged_video_is_refused_with_the_reason(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    pytest.importorskip("av")
    await make_tg_bot(tg)
    tg.send_user_message(80, video=b"\x00\x00\x00\x18ftypmp42 broken" * 40, caption="look")
    await wait_until(lambda: any("not a video I can read" in t for t in texts(tg, 80)), what="refusal")
    assert fake_openai.requests == []


async def test_messages_of_one_chat_stay_in_order_behind_a_download(
    tg: FakeTelegramServer, make_tg_bot, fake_openai
) -> None:
    app = await make_tg_bot(tg, bot={"busy_policy": "queue"})
    seen: list[str] = []
    original = app.dispatcher.handle

    async def spy(message):  # type: ignore[no-untyped-def]
        seen.append(message.text)
        return await original(message)

    app.dispatcher.handle = spy  # type: ignore[method-assign]  # the host hands over through it
    tg.send_user_message(75, photo=png(), caption="first (photo)")
    tg.send_user_message(75, "second (text)")
    await wait_until(lambda: len(seen) == 2, what="both messages")
    assert seen == ["first (photo)", "second (text)"]


async def test_send_image_with_short_and_long_captions(tg: FakeTelegramServer, make_tg_bot) -> None:
    app = await make_tg_bot(tg)
    tg.send_user_message(76, "hi")
    await wait_text(tg, 76, "You said: hi")
    connector = app.connectors["telegram"]
    from relaybot import ChatKey

    chat = ChatKey("telegram", "76")
    message_id = await connector.send_image(chat, png(), caption="A **red** square")
    photo = tg.message(76, int(message_id))
    assert photo is not None and photo.kind == "photo" and photo.text == "A red square"
    assert any(e["type"] == "bold" for e in photo.entities)
    long_caption = "word " * 400
    await connector.send_image(chat, png(), caption=long_caption)
    await wait_until(lambda: any(t == long_caption.strip() for t in texts(tg, 76)), what="caption as text")
    await asyncio.sleep(0.1)


async def test_an_image_frame_replaces_the_progress_notice(tg: FakeTelegramServer, make_tg_bot) -> None:
    from relaybot import ChatKey

    app = await make_tg_bot(tg)
    tg.send_user_message(77, "hi")
    await wait_text(tg, 77, "You said: hi")
    chat = ChatKey("telegram", "77")
    stream = app.scheduler("telegram").open(chat, private=False, kind="command")  # send + edit
    stream.append("🎨 Generating…")
    notice = await wait_text(tg, 77, "🎨 Generating…")
    result = await stream.finish_image(png(), caption="A red square")
    assert result.delivered
    photo = tg.message(77, int(result.message_ids[0]))
    assert photo is not None and photo.kind == "photo" and photo.text == "A red square"
    assert tg.message(77, notice.message_id).deleted  # deleteMessage: nothing left behind
    assert "🎨 Generating…" not in texts(tg, 77)


async def test_an_interrupted_reply_ends_with_the_marker(tg: FakeTelegramServer, make_tg_bot) -> None:
    from relaybot import INTERRUPTED_MARKER, ChatKey

    app = await make_tg_bot(tg)
    tg.send_user_message(78, "hi")
    await wait_text(tg, 78, "You said: hi")
    stream = app.scheduler("telegram").open(ChatKey("telegram", "78"), private=False)
    stream.append("A **partial** answer")
    result = await stream.finish(interrupted=True)
    assert result.interrupted and result.text == "A **partial** answer"
    shown = await wait_text(tg, 78, f"A partial answer\n\n{INTERRUPTED_MARKER}")  # formatted + marker
    assert any(e["type"] == "bold" for e in shown.entities)
