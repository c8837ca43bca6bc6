"""Videos people send: real videos made with PyAV reach a vision model as frames and Gemini as
video; bad files are refused with a clear message; decoding stays bounded."""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from PIL import Image

from relaybot.core.modelio.media import MediaError, MediaStore
from relaybot.core.modelio.video import sample_frames
from relaybot.core.modelio.video_parts import AUDIO_NOTE, NO_VIDEO_NOTE
from relaybot.core.testing.video import COLOURS, make_video
from relaybot.testing import FakeGeminiServer

pytest.importorskip("av")


def _user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The content parts of the last user message of an OpenAI chat request."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def _colour_of(data_url: str) -> tuple[int, int, int]:
    data = base64.b64decode(data_url.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").getpixel((img.width - 2, img.height - 2))  # type: ignore[return-value]


def _near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(colour, expected, strict=True))


async def test_a_video_reaches_a_vision_model_as_timed_frames(
    make_bot: Callable[..., Awaitable[Any]], fake_openai: Any
) -> None:
    bot = await make_bot()
    video = await bot.app.media.save_video(make_video(seconds=2, audio=True))
    assert (video.mime_type, video.duration, video.has_audio) == ("video/mp4", 2.0, True)
    fake_openai.add_reply("A red screen, then a green one.")
    answer = await bot.say("what happens in this clip?", attachments=(video,))

    assert answer.startswith("A red screen, then a green one.")
    assert AUDIO_NOTE in answer  # the sound was not used, and the user is told why
    parts = _user_parts(fake_openai.requests[-1].json)
    texts = [p["text"] for p in parts if p["type"] == "text"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 8
    assert "[video, 2.0 s: 8 frames sampled evenly, each after its time]" in texts
    stamps = [t for t in texts if t.startswith("[frame at ")]
    assert len(stamps) == 8 and stamps[0] == "[frame at 0:00.1]" and stamps[-1] == "[frame at 0:01.9]"
    # second 0 of the test video is red and second 1 green: the frames come from across it
    assert _near(_colour_of(images[0]), COLOURS[0]) and _near(_colour_of(images[-1]), COLOURS[1])

    # the next turn sends the same frames again without decoding the video again
    fake_openai.add_reply("Yes.")
    await bot.say("are you sure?")
    earlier = _user_parts_all(fake_openai.requests[-1].json)
    again = [p["image_url"]["url"] for p in earlier if "image_url" in p]
    assert again == images


def _user_parts_all(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in body["messages"]:
        if message["role"] == "user" and isinstance(message["content"], list):
            out.extend(message["content"])
    return out


async def test_a_video_goes_to_gemini_whole(make_bot: Callable[..., Awaitable[Any]]) -> None:
    async with FakeGeminiServer(api_key="AIza-test") as gemini:
        bot = await make_bot(
            config={
                "bot": {"default_provider": "gem"},
                "providers": {"gem": {"type": "gemini", "base_url": gemini.base_url, "api_key": "AIza-test"}},
            }
        )
        raw = make_video(seconds=2, audio=True)
        video = await bot.app.media.save_video(raw)
        gemini.add_reply("It turns from red to green.")
        answer = await bot.say("describe it", attachments=(video,))
        assert answer == "It turns from red to green."  # Gemini hears the sound: no note
        parts = gemini.requests[-1].json["contents"][-1]["parts"]
        inline = [p["inline_data"] for p in parts if "inline_data" in p]
        assert inline == [{"mime_type": "video/mp4", "data": base64.b64encode(raw).decode()}]
        assert {"text": "describe it"} in parts


async def test_a_video_too_long_for_geminis_window_goes_as_frames(
    make_bot: Callable[..., Awaitable[Any]],
) -> None:
    async with FakeGeminiServer(api_key="AIza-test") as gemini:
        bot = await make_bot(
            config={
                "bot": {"default_provider": "gem"},
                "providers": {
                    # ~300 tokens a second: 10 s of video would take more than half of 4,000 tokens
                    "gem": {"type": "gemini", "base_url": gemini.base_url, "api_key": "AIza-test",
                            "context_window": 4000, "max_output_tokens": 100},
                },
            }
        )  # fmt: skip
        video = await bot.app.media.save_video(make_video(seconds=10, fps=2, audio=True))
        gemini.add_reply("Frames it is.")
        answer = await bot.say("describe it", attachments=(video,))
        assert AUDIO_NOTE in answer
        parts = gemini.requests[-1].json["contents"][-1]["parts"]
        mimes = [p["inline_data"]["mime_type"] for p in parts if "inline_data" in p]
        assert mimes == ["image/jpeg"] * 8


async def test_a_model_without_vision_gets_a_marker_and_the_user_a_note(
    make_bot: Callable[..., Awaitable[Any]], fake_openai: Any
) -> None:
    bot = await make_bot(config={"providers": {"fake": {"vision": False}}})
    video = await bot.app.media.save_video(make_video(seconds=1))
    fake_openai.add_reply("I can only read text.")
    answer = await bot.say("look", attachments=(video,))
    assert NO_VIDEO_NOTE in answer
    parts = _user_parts(fake_openai.requests[-1].json)
    assert not any(p["type"] == "image_url" for p in parts)
    assert any("cannot see images or video" in p.get("text", "") for p in parts)


def _webm(seconds: float) -> bytes:
    return make_video(seconds=seconds, codec="libvpx", container="webm")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x01garbage" * 500, "not a video I can read"),
        (make_video(seconds=2)[:1500], "not a video I can read"),  # an MP4 cut before its index
        (make_video(seconds=1, audio=True, video=False), "no picture in it"),
        (b"", "empty"),
    ],
    ids=["corrupt", "truncated-mp4", "sound-only", "empty"],
)
async def test_bad_videos_are_refused_with_a_clear_message(tmp_path: Any, data: bytes, expected: str) -> None:
    media = MediaStore(tmp_path)
    with pytest.raises(MediaError) as info:
        await media.save_video(data)
    assert expected in info.value.user_message
    assert not any(tmp_path.rglob("*")) or not any(p.is_file() for p in tmp_path.rglob("*"))


async def test_an_image_is_not_taken_for_a_video(tmp_path: Any) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    with pytest.raises(MediaError) as info:
        await MediaStore(tmp_path).save_video(buf.getvalue())
    assert "not supported" in info.value.user_message


async def test_a_video_over_the_size_limit_is_refused_before_decoding(tmp_path: Any) -> None:
    with pytest.raises(MediaError) as info:
        await MediaStore(tmp_path).save_video(b"\x00" * 2048, max_bytes=1024)
    assert "larger than" in info.value.user_message


def test_a_cut_off_video_gives_the_frames_that_could_be_read() -> None:
    whole = _webm(4)
    sample = sample_frames(whole[: len(whole) // 2], 8)
    assert 0 < len(sample.frames) < 8 and not sample.complete
    assert max(f.time for f in sample.frames) < 2.5


async def test_a_cut_off_video_is_answered_with_a_note(
    make_bot: Callable[..., Awaitable[Any]], fake_openai: Any
) -> None:
    bot = await make_bot()
    whole = _webm(4)
    video = await bot.app.media.save_video(whole[: len(whole) // 2])
    fake_openai.add_reply("Colours.")
    answer = await bot.say("what is it?", attachments=(video,))
    assert "could not be read" in answer
    assert 0 < sum(p["type"] == "image_url" for p in _user_parts(fake_openai.requests[-1].json)) < 8


def test_a_three_hour_video_under_20_mb_is_sampled_evenly_with_bounded_decoding() -> None:
    # one frame every 10 s for 3 hours, a keyframe every 5 minutes: tiny, but very long
    data = make_video(seconds=3 * 3600, fps=0.1, size=(64, 48), gop=30)
    assert len(data) < 20 * 1024 * 1024
    sample = sample_frames(data, 8)
    times = [f.time for f in sample.frames]
    assert sample.complete and len(times) == 8 and times == sorted(times)
    assert times[0] < 1800 and times[-1] > 9000  # from the first to the last half hour
    # seeking: a few frames decoded per sample, not the 1,080 of the whole video
    assert sample.decoded <= 8 * 31


def test_decoding_stops_at_its_deadline_with_what_it_has() -> None:
    sample = sample_frames(make_video(seconds=2), 8, budget_seconds=0)
    assert len(sample.frames) >= 1 and not sample.complete
