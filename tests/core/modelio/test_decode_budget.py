"""Memory stays bounded on near-limit images (issue 11.6): pixel bound and a decode budget.

The probe: a 409 KB PNG of 9,990 × 9,990 RGBA was accepted and took the server from 141 to
505 MB while decoded. These tests check the refusals and the budget's queueing functionally
(what a user is told, who waits for whom), not memory figures.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from relaybot.core.modelio.images import OPENAI_IMAGE_LIMITS, ImageLimits, prepare_image
from relaybot.core.modelio.media import MAX_DECODE_PIXELS, DecodeBudget, MediaError, MediaStore


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_rgba_png(side: int = 9990) -> bytes:
    """The probe's image: a real, valid side × side RGBA PNG, compressed row by row (no big buffer)."""
    row = b"\x00" + b"\x00" * (side * 4)  # filter byte + transparent black pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def probe_png() -> bytes:
    data = huge_rgba_png()
    assert len(data) < 500_000  # a small upload: only its pixels are huge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # pillow's default bound
        with Image.open(io.BytesIO(data)) as img:
            assert (img.size, img.mode) == ((9990, 9990), "RGBA")
    return data


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 40).convert(mode).save(buf, "PNG")
    return buf.getvalue()


async def test_near_limit_png_is_refused_before_decoding_with_a_clear_message(
    tmp_path: Path, probe_png: bytes
) -> None:
    budget = DecodeBudget()
    with pytest.raises(MediaError) as err:
        await MediaStore(tmp_path, decode_budget=budget).save(probe_png)
    assert "too many pixels for me to process" in err.value.user_message
    assert f"{MAX_DECODE_PIXELS // 1_000_000} megapixels" in err.value.user_message
    assert budget.used == 0 and not any(await asyncio.to_thread(lambda: list(tmp_path.iterdir())))
    # preparing it for a provider (an image stored before this limit) is refused the same way
    with pytest.raises(MediaError, match="decode limit"):
        prepare_image(probe_png, OPENAI_IMAGE_LIMITS)


async def test_a_large_jpeg_photo_is_validated_at_reduced_scale(tmp_path: Path) -> None:
    """36 MP is over the pixel bound, but a JPEG decodes at 1/8 scale for validation: accepted."""
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6000), "teal").save(buf, "JPEG", quality=50)
    ref = await MediaStore(tmp_path).save(buf.getvalue())
    assert (ref.mime_type, ref.width, ref.height) == ("image/jpeg", 6000, 6000)
    out, mime = prepare_image(buf.getvalue(), OPENAI_IMAGE_LIMITS)
    with Image.open(io.BytesIO(out)) as img:
        assert mime == "image/jpeg" and max(img.size) <= 2000


def test_a_request_over_the_whole_budget_is_refused_at_once() -> None:
    budget = DecodeBudget(10 * 1024 * 1024)
    image = png((1000, 1000))  # 4 MB decoded, 8 MB with its working copy
    prepare_image(image, ImageLimits(max_long_edge=500), budget=budget)  # fits
    with pytest.raises(MediaError) as err:
        prepare_image(image, ImageLimits(max_long_edge=500), budget=DecodeBudget(6 * 1024 * 1024))
    assert "too many pixels" in err.value.user_message


def test_concurrent_decodes_wait_for_the_budget_then_run() -> None:
    """The second decode queues while the first holds the budget, and runs once it is freed."""
    budget = DecodeBudget(10 * 1024 * 1024)
    image = png((1000, 1000))
    results: list[tuple[bytes, str]] = []
    holding = budget.reserve(6 * 1024 * 1024)  # another decode in flight
    holding.__enter__()
    worker = threading.Thread(
        target=lambda: results.append(prepare_image(image, ImageLimits(max_long_edge=500), budget=budget))
    )
    worker.start()
    try:
        assert budget.wait_until(lambda b: b.waiting == 1, timeout=30)
        assert results == [] and budget.used == 6 * 1024 * 1024  # it waits, it did not decode
    finally:
        holding.__exit__(None, None, None)
    worker.join(30)
    assert len(results) == 1 and results[0][1] == "image/png"
    assert budget.used == 0 and budget.waiting == 0


def test_a_decode_that_cannot_get_the_budget_in_time_is_refused_as_busy() -> None:
    budget = DecodeBudget(10 * 1024 * 1024, wait_seconds=0)
    with budget.reserve(9 * 1024 * 1024), pytest.raises(MediaError) as err:
        prepare_image(png((1000, 1000)), ImageLimits(max_long_edge=500), budget=budget)
    assert "busy with other large images" in err.value.user_message
    assert budget.used == 0


async def test_the_store_validates_through_its_budget(tmp_path: Path) -> None:
    budget = DecodeBudget(10 * 1024 * 1024)
    store = MediaStore(tmp_path, decode_budget=budget)
    holding = budget.reserve(8 * 1024 * 1024)
    holding.__enter__()
    saving = asyncio.create_task(store.save(png((1000, 1000))))  # 4 MB decoded: must wait
    try:
        assert await asyncio.to_thread(budget.wait_until, lambda b: b.waiting == 1, 30)
        assert not saving.done()
    finally:
        holding.__exit__(None, None, None)
    ref = await asyncio.wait_for(saving, 30)
    assert (ref.width, ref.height) == (1000, 1000)
