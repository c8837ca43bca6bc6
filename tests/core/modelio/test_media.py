"""The media store: real images in, everything else refused with a message a person understands."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from relaybot.core.modelio.media import MediaError, MediaStore


def png(width: int = 40, height: int = 30, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


async def test_save_and_load_round_trip(tmp_path) -> None:
    store = MediaStore(tmp_path)
    data = png()
    ref = await store.save(data, mime_type="application/octet-stream")
    assert ref.uri.startswith("media:") and ref.mime_type == "image/png"
    assert (ref.width, ref.height, ref.size_bytes) == (40, 30, len(data))
    assert await store.load(ref) == data
    assert (await store.data_url(ref)).startswith("data:image/png;base64,iVBOR")
    assert await store.save(data) == ref  # content-addressed: stored once


async def test_text_file_renamed_png_is_refused(tmp_path) -> None:
    with pytest.raises(MediaError) as err:
        await MediaStore(tmp_path).save(b"<html>not an image</html>", mime_type="image/png")
    assert "not an image" in err.value.user_message


async def test_truncated_image_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), "blue").save(buf, "JPEG")
    with pytest.raises(MediaError, match="not a readable image"):
        await MediaStore(tmp_path).save(buf.getvalue()[: len(buf.getvalue()) // 2])


async def test_oversized_file_is_refused_before_decoding(tmp_path) -> None:
    with pytest.raises(MediaError) as err:
        await MediaStore(tmp_path, max_bytes=1000).save(png(200, 200, "white") + b"\0" * 2000)
    assert "larger than" in err.value.user_message


async def test_decompression_bomb_is_refused(tmp_path) -> None:
    # a tiny file that claims 20,000 × 20,000 pixels
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 200_000
    with pytest.raises(MediaError) as err:
        await MediaStore(tmp_path).save(buf.getvalue())
    assert "too large in pixels" in err.value.user_message


async def test_unknown_references_are_errors(tmp_path) -> None:
    store = MediaStore(tmp_path)
    with pytest.raises(MediaError):
        await store.load("media:../../etc/passwd")
    with pytest.raises(MediaError, match="missing"):
        await store.load("media:" + "0" * 64)
