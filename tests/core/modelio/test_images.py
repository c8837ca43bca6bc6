"""Images prepared per provider: upright, in a format it takes, within its pixel and byte limits."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from relaybot.core.modelio.images import (
    ANTHROPIC_IMAGE_LIMITS,
    GEMINI_IMAGE_LIMITS,
    OPENAI_IMAGE_LIMITS,
    ImageLimits,
    prepare_image,
    prepared_image,
)
from relaybot.core.modelio.media import MediaError, MediaStore


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    """A photo-like image: smooth gradients plus noise (many colours, compresses like a photo)."""
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.frombytes("L", (width, height), os.urandom(width * height))
    return Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    # Stored 200×100 with "rotate 90° CW to display" (orientation 6): the top of the stored
    # image (red) is the right-hand side of the photo as the camera saw it.
    stored = Image.new("RGB", (200, 100), "blue")
    stored.paste((255, 0, 0), (0, 0, 200, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)

    out, mime = prepare_image(data, OPENAI_IMAGE_LIMITS)
    img = decode(out)
    assert mime == "image/jpeg"
    assert img.size == (100, 200)  # portrait, as the camera held it
    assert img.getpixel((95, 100))[0] > 200  # red is on the right
    assert img.getpixel((5, 100))[2] > 200  # blue on the left
    assert img.getexif().get(0x0112, 1) == 1  # no rotation tag left to apply twice


def test_big_photo_fits_anthropic_bounds() -> None:
    data = encode(photo(4000, 3000), "JPEG", quality=92)
    out, mime = prepare_image(data, ANTHROPIC_IMAGE_LIMITS)
    width, height = decode(out).size
    assert mime == "image/jpeg"
    assert max(width, height) <= 1568 and width * height <= 1_150_000
    assert len(out) <= 5_242_880
    assert abs(width / height - 4 / 3) < 0.01  # aspect ratio kept
    assert width >= 1200  # scaled to the bound, not far below it


def test_openai_high_detail_bounds() -> None:
    out, _ = prepare_image(encode(photo(3000, 1000), "JPEG"), OPENAI_IMAGE_LIMITS)
    width, height = decode(out).size
    assert width <= 2000 and height <= 768 and height >= 660


def test_png_with_alpha_stays_png_with_alpha() -> None:
    img = Image.new("RGBA", (3000, 1000), (0, 128, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 1500, 1000))
    out, mime = prepare_image(encode(img, "PNG"), ANTHROPIC_IMAGE_LIMITS)
    result = decode(out)
    assert mime == "image/png" and result.mode == "RGBA"
    assert max(result.size) <= 1568
    assert result.getpixel((10, 10))[3] == 0 and result.getpixel((result.width - 10, 10))[3] == 255


def test_screenshot_with_few_colours_stays_lossless_png() -> None:
    img = Image.new("RGB", (2400, 1200), "white")
    img.paste((30, 30, 200), (100, 100, 900, 400))
    out, mime = prepare_image(encode(img, "BMP"), ANTHROPIC_IMAGE_LIMITS)
    assert mime == "image/png"
    assert decode(out).getpixel((200, 100)) == (30, 30, 200)


def test_huge_noisy_image_is_compressed_under_the_byte_limit() -> None:
    # pure noise does not compress: even at the pixel bounds a PNG/high-quality JPEG is too big
    noisy = Image.frombytes("RGB", (1500, 1000), os.urandom(1500 * 1000 * 3))
    data = encode(noisy, "PNG")
    limits = ImageLimits(max_bytes=300_000, max_long_edge=1568, max_pixels=1_150_000)
    out, mime = prepare_image(data, limits)
    assert len(out) <= 300_000
    assert mime == "image/jpeg"
    assert decode(out).size[0] >= 200  # shrunk as needed, still a real picture


def test_animated_gif_sends_its_first_frame() -> None:
    frames = [Image.new("RGB", (50, 40), color) for color in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    out, mime = prepare_image(buf.getvalue(), ANTHROPIC_IMAGE_LIMITS)
    img = decode(out)
    assert mime in ("image/png", "image/jpeg") and not getattr(img, "is_animated", False)
    red, green, blue = img.convert("RGB").getpixel((25, 20))
    assert red > 200 and green < 60 and blue < 60


def test_format_the_provider_does_not_take_is_converted() -> None:
    data = encode(photo(300, 200), "GIF")
    _, mime = prepare_image(data, GEMINI_IMAGE_LIMITS)  # Gemini takes no GIF
    assert mime in ("image/png", "image/jpeg")


def test_image_that_already_fits_is_sent_byte_for_byte() -> None:
    data = encode(photo(800, 600), "JPEG", quality=80)
    assert prepare_image(data, ANTHROPIC_IMAGE_LIMITS) == (data, "image/jpeg")


@pytest.mark.parametrize("data", [b"GIF89a not really", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""])
def test_unreadable_bytes_are_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError) as err:
        prepare_image(data, OPENAI_IMAGE_LIMITS)
    assert "image" in err.value.user_message


def test_decompression_bomb_is_refused_without_decoding() -> None:
    bomb = encode(Image.new("1", (12_000, 10_000)), "PNG")  # 120 MP of one colour: a few KB
    with pytest.raises(MediaError, match="decompression bomb"):
        prepare_image(bomb, OPENAI_IMAGE_LIMITS)


def test_limits_must_leave_room_for_an_image() -> None:
    with pytest.raises(ValueError):
        ImageLimits(max_long_edge=10)
    with pytest.raises(ValueError):
        ImageLimits(formats=frozenset({"image/gif"}))


async def test_prepared_images_are_cached_beside_the_media_file(tmp_path, monkeypatch) -> None:
    import relaybot.core.modelio.images as images

    media = MediaStore(tmp_path)
    ref = await media.save(encode(photo(3000, 2000), "JPEG"))
    first = await prepared_image(media, ref, ANTHROPIC_IMAGE_LIMITS)
    cached = list(media.path_of(ref).parent.glob("*.jpg"))
    assert len(cached) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("re-encoded although a prepared copy was cached")

    monkeypatch.setattr(images, "prepare_image", must_not_run)
    assert await prepared_image(media, ref, ANTHROPIC_IMAGE_LIMITS) == first
    # other limits are another cache entry (and would need encoding)
    with pytest.raises(AssertionError, match="re-encoded"):
        await prepared_image(media, ref, OPENAI_IMAGE_LIMITS)


async def test_small_image_is_cached_as_unchanged(tmp_path, monkeypatch) -> None:
    import relaybot.core.modelio.images as images

    media = MediaStore(tmp_path)
    data = encode(Image.new("RGB", (40, 30), "red"), "PNG")
    ref = await media.save(data)
    assert await prepared_image(media, ref, OPENAI_IMAGE_LIMITS) == (data, "image/png")
    monkeypatch.setattr(images, "prepare_image", None)  # a second preparation would crash
    assert await prepared_image(media, ref, OPENAI_IMAGE_LIMITS) == (data, "image/png")


# ── end to end ──────────────────────────────────────────────────────────────────────────────


def sent_image(request_json: dict) -> Image.Image:
    content = request_json["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
    header, payload = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return decode(base64.b64decode(payload))


async def test_uploaded_big_image_reaches_the_provider_resized(make_bot, fake_openai) -> None:
    bot = await make_bot()
    ref = await bot.app.media.save(encode(photo(4000, 3000), "JPEG", quality=90))
    answer = await bot.say("what is in this photo?", attachments=(ref,))
    assert answer.startswith("You said: what is in this photo?")
    img = sent_image(fake_openai.requests[-1].json)
    assert img.size == (1024, 768)  # OpenAI high detail: short side 768, aspect kept
    # a second turn sends the same prepared image again (from the cache) and the original is kept
    await bot.say("and the colours?")
    assert sent_image_in_history(fake_openai.requests[-1].json).size == (1024, 768)
    assert await bot.app.media.load(ref) == await bot.app.media.load(ref.uri)
    conv = await bot.app.store.active_conversation(bot.chat())
    first = (await bot.app.store.path(conv.leaf_id)).messages[0]
    assert first.parts[1].image.uri == ref.uri and first.parts[1].image.width == 4000


def sent_image_in_history(request_json: dict) -> Image.Image:
    for message in request_json["messages"]:
        if isinstance(message["content"], list):
            return sent_image({"messages": [message]})
    raise AssertionError("no image in the request")


async def test_image_that_cannot_be_loaded_is_left_out_and_the_user_told(make_bot, fake_openai) -> None:
    bot = await make_bot()
    ref = await bot.app.media.save(encode(photo(100, 100), "PNG"))
    bot.app.media.path_of(ref).unlink()  # e.g. the media folder was pruned
    answer = await bot.say("look", attachments=(ref,))
    assert "could not be sent" in answer and "no longer available" in answer
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    assert "image_url" not in str(content)
