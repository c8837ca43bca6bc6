"""Preparing stored images for a provider: orientation, format, size and bytes within its limits.

Every vision API has its own input limits (see ``platform-facts.md``, *Vision input*): Anthropic
wants at most 5 MB per image and works best at ≤ 1568 px on the long edge and ≤ 1.15 megapixels;
OpenAI's high-detail mode uses at most 768 px on the short side and 2000 px on the long side;
Gemini is generous. A provider states its limits as :class:`ImageLimits` in
:attr:`ProviderCapabilities.image_limits <relaybot.core.contracts.provider.ProviderCapabilities>`, and the
core runs every ``media:`` image through :func:`prepare_image` before the request:

* EXIF orientation is applied (phone photos are stored sideways with a rotation tag that
  providers do not all honour);
* animated images keep their first frame, other formats become JPEG (photos) or PNG
  (transparency, or few colours such as screenshots and diagrams, which JPEG smears);
* the image is scaled down to the bounds and re-compressed (JPEG quality stepping down, then
  smaller dimensions) until it fits ``max_bytes``.

An image that already fits is sent byte for byte (no generation loss). Decoding and encoding
are CPU work, so the async entry points run them in a worker thread; :func:`prepared_image`
caches results on disk beside the media file, so a long conversation does not re-encode its
images on every turn.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from relaybot.core.contracts.models import ImageRef
from relaybot.core.modelio.media import DECODE_BUDGET, MAX_PIXELS, DecodeBudget, MediaError, decode_cost

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from relaybot.core.modelio.media import MediaStore

__all__ = [
    "ANTHROPIC_IMAGE_LIMITS",
    "GEMINI_IMAGE_LIMITS",
    "OPENAI_IMAGE_LIMITS",
    "ImageLimits",
    "prepare_image",
    "prepare_image_async",
    "prepared_data_url",
    "prepared_image",
]

#: bump when the preparation algorithm changes, so cached results made by the old one are ignored
_ALGORITHM_VERSION = 1
#: JPEG qualities tried in order until the image fits ``max_bytes``
_JPEG_QUALITIES = (85, 75, 65, 55, 45, 35)
#: when even the lowest quality is too big, dimensions shrink by this factor and the steps repeat
_SHRINK = 0.75
#: below this long edge we give up shrinking: the limits are unreasonable for any real image
_MIN_EDGE = 64
#: at most this many distinct colours counts as "few colours" (kept lossless as PNG)
_FEW_COLOURS = 256
_MIME_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
_FORMAT_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                "WEBP": "image/webp"}  # fmt: skip
# EXIF orientation values that swap width and height (rotations by 90°/270°, with or without flip)
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What a provider accepts per image. ``None`` means no bound of that kind.

    ``max_bytes`` bounds the encoded (not base64) bytes; ``max_long_edge`` /
    ``max_short_edge`` bound the longer / shorter side in pixels; ``max_pixels`` bounds
    width × height; ``formats`` are the MIME types the provider takes (an image in another
    format is converted to JPEG or PNG, so at least one of those two must be listed).
    """

    max_bytes: int = 5_242_880
    max_long_edge: int | None = None
    max_short_edge: int | None = None
    max_pixels: int | None = None
    formats: frozenset[str] = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("ImageLimits.max_bytes must be positive")
        for name in ("max_long_edge", "max_short_edge", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < _MIN_EDGE:
                raise ValueError(f"ImageLimits.{name} must be at least {_MIN_EDGE}")
        if not {"image/jpeg", "image/png"} & self.formats:
            raise ValueError("ImageLimits.formats must include image/jpeg or image/png")

    @property
    def cache_key(self) -> str:
        """A short stable name for these limits (and the algorithm version), for cache files."""
        text = repr((_ALGORITHM_VERSION, self.max_bytes, self.max_long_edge, self.max_short_edge,
                     self.max_pixels, sorted(self.formats)))  # fmt: skip
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The largest size ≤ ``(width, height)`` with the same aspect ratio within the bounds."""
        long_edge, short_edge = max(width, height), min(width, height)
        scale = 1.0
        if self.max_long_edge is not None:
            scale = min(scale, self.max_long_edge / long_edge)
        if self.max_short_edge is not None:
            scale = min(scale, self.max_short_edge / short_edge)
        if self.max_pixels is not None:
            scale = min(scale, math.sqrt(self.max_pixels / (width * height)))
        if scale >= 1.0:
            return width, height
        # floor, so rounding never pushes a side or the pixel count over its bound
        return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


#: Claude: ≤ 5 MB per image; long edge ≤ 1568 px and ≤ 1.15 MP avoid server-side resizing
ANTHROPIC_IMAGE_LIMITS = ImageLimits(max_bytes=5_242_880, max_long_edge=1568, max_pixels=1_150_000)
#: OpenAI: ≤ 20 MB per image; high detail looks at ≤ 768 px (short side) × 2000 px (long side)
OPENAI_IMAGE_LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_long_edge=2000, max_short_edge=768)
#: Gemini: inline data up to 100 MB per request; 3072 px keeps detail without wasting tokens
GEMINI_IMAGE_LIMITS = ImageLimits(
    max_bytes=7 * 1024 * 1024,
    max_long_edge=3072,
    formats=frozenset({"image/jpeg", "image/png", "image/webp"}),
)


# ── the synchronous core (runs in a worker thread) ──────────────────────────────────────────


def prepare_image(
    data: bytes, limits: ImageLimits, *, budget: DecodeBudget | None = None
) -> tuple[bytes, str]:
    """Return ``(bytes, mime_type)`` of ``data`` made to fit ``limits`` (CPU-bound: see module doc).

    ``data`` is returned unchanged when it already fits (allowed format, within the bounds and
    ``max_bytes``, upright, not animated). Raises :class:`~relaybot.core.modelio.media.MediaError` for
    bytes that are not a readable image, decompression bombs, images with more pixels than can
    be decoded (:data:`~relaybot.core.modelio.media.MAX_DECODE_PIXELS`, after reduced JPEG decoding) and
    images that cannot be made small enough. Decoding holds its memory in ``budget`` (the
    process-wide decode budget), waiting while concurrent decodes use it up.
    """
    img = _open(data)
    with img:
        orientation = _orientation(img)
        display = img.size if orientation not in _SWAPS_AXES else img.size[::-1]
        target = limits.target_size(*display)
        if img.format in ("JPEG", "MPO") and target != display:
            # libjpeg can decode at 1/2, 1/4, 1/8 scale: much faster and lighter for huge
            # photos. draft() only works before the pixels are loaded (and changes img.size).
            img.draft("RGB", target if orientation not in _SWAPS_AXES else target[::-1])
        # the decoded image plus one full-size working copy (orientation / mode conversion)
        with (budget or DECODE_BUDGET).reserve(2 * decode_cost(img)):
            return _fit(img, data, limits, orientation, display, target)


def _fit(
    img: PILImage,
    data: bytes,
    limits: ImageLimits,
    orientation: int,
    display: tuple[int, int],
    target: tuple[int, int],
) -> tuple[bytes, str]:
    """The body of :func:`prepare_image` once the decode's memory is reserved."""
    from PIL import Image, ImageOps

    fmt = img.format or ""
    mime = _FORMAT_MIME.get(fmt)
    animated = bool(getattr(img, "is_animated", False))
    jpeg = fmt in ("JPEG", "MPO")  # MPO: a phone's multi-picture JPEG
    _load(img)  # decodes everything: a truncated file fails here
    if (
        mime in limits.formats
        and target == display
        and orientation in (0, 1)
        and not animated
        and len(data) <= limits.max_bytes
        and img.mode in ("RGB", "RGBA", "L", "LA", "P", "1")
    ):
        return data, mime  # type: ignore[return-value]  # mime is in formats, so not None
    img.seek(0)  # animated: the first frame
    frame = ImageOps.exif_transpose(img) if orientation not in (0, 1) else img.copy()
    frame = _normalise_mode(frame)
    if frame.size != target:
        # to the target computed from the true size: a draft-decoded JPEG is only roughly scaled
        frame = frame.resize(target, Image.Resampling.LANCZOS)
    # a JPEG stays a JPEG: its artefacts would only make a bigger PNG
    return _encode_within(frame, limits, photo=jpeg)


def _unreadable() -> MediaError:
    return MediaError(
        "not a readable image",
        user_message="That file is not an image I can read (or it is damaged).",
    )


def _load(img: PILImage) -> None:
    try:
        img.load()
    except Exception:
        raise _unreadable() from None


def _open(data: bytes) -> PILImage:
    """Open (header only) with the media store's decompression-bomb guard."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # the same bound as MediaStore.save
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(
            "image refused: its pixel dimensions are absurdly large (possible decompression bomb)",
            user_message="That image is far too large in pixels. Please send a smaller one.",
        ) from None
    except Exception:
        raise _unreadable() from None
    return img


def _orientation(img: PILImage) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block must not lose the image: treat it as upright
        return 1


def _has_alpha(img: PILImage) -> bool:
    if img.mode in ("RGBA", "LA", "PA"):
        # an alpha channel that is fully opaque everywhere is no transparency at all
        lowest = img.getchannel("A").getextrema()[0]
        return isinstance(lowest, int | float) and lowest < 255
    return "transparency" in img.info


def _normalise_mode(img: PILImage) -> PILImage:
    """RGB, RGBA or L: the modes both JPEG and PNG encoders handle well."""
    if img.mode in ("RGB", "L"):
        return img
    if img.mode == "RGBA":
        return img if _has_alpha(img) else img.convert("RGB")
    if _has_alpha(img):
        return img.convert("RGBA")
    return img.convert("RGB")


def _few_colours(img: PILImage) -> bool:
    return img.getcolors(maxcolors=_FEW_COLOURS) is not None


def _encode_within(img: PILImage, limits: ImageLimits, *, photo: bool) -> tuple[bytes, str]:
    """Encode as PNG (transparency / few colours) or JPEG, shrinking until ``max_bytes`` fits.

    ``photo`` (the source was a JPEG) skips the few-colours test.
    """
    alpha = img.mode == "RGBA"
    want_png = "image/png" in limits.formats and (alpha or (not photo and _few_colours(img)))
    if "image/jpeg" not in limits.formats:
        want_png = True
    while True:
        if want_png:
            data = _png(img)
            if len(data) <= limits.max_bytes:
                return data, "image/png"
            if not alpha and "image/jpeg" in limits.formats:
                want_png = False  # a lossless screenshot that is too big: a photo encoding then
                continue
        else:
            rgb = img if img.mode in ("RGB", "L") else _flatten(img)
            for quality in _JPEG_QUALITIES:
                data = _jpeg(rgb, quality)
                if len(data) <= limits.max_bytes:
                    return data, "image/jpeg"
        width, height = img.size
        if max(width, height) * _SHRINK < _MIN_EDGE:
            raise MediaError(
                f"image cannot be compressed under {limits.max_bytes} bytes",
                user_message="That image is too detailed to send to the model, even shrunk.",
            )
        from PIL import Image

        size = (max(1, int(width * _SHRINK)), max(1, int(height * _SHRINK)))
        img = img.resize(size, Image.Resampling.LANCZOS)


def _flatten(img: PILImage) -> PILImage:
    """Transparent pixels over white (what a viewer would show), for formats without alpha."""
    from PIL import Image

    background = Image.new("RGB", img.size, "white")
    background.paste(img, mask=img.getchannel("A") if img.mode == "RGBA" else None)
    return background


def _jpeg(img: PILImage, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def _png(img: PILImage) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


# ── async entry points ──────────────────────────────────────────────────────────────────────


async def prepare_image_async(data: bytes, limits: ImageLimits) -> tuple[bytes, str]:
    """:func:`prepare_image` in a worker thread (never blocks the event loop)."""
    return await asyncio.to_thread(prepare_image, data, limits)


async def prepared_image(media: MediaStore, ref: ImageRef, limits: ImageLimits) -> tuple[bytes, str]:
    """The stored image ``ref`` (a ``media:`` reference) prepared for ``limits``, cached on disk.

    The result is kept beside the media file as ``<sha>.<limits key>.<ext>`` (or a
    ``.same`` marker when the original already fits), so each image is prepared once per set of
    limits, across turns and restarts. Raises MediaError (missing file, unreadable image).
    """
    original = media.path_of(ref)
    stem = f"{original.name}.{limits.cache_key}"
    cached = await asyncio.to_thread(_read_cached, original, stem)
    if cached is not None:
        return cached
    data = await media.load(ref)
    prepared, mime = await prepare_image_async(data, limits)
    try:
        await asyncio.to_thread(_write_cached, original, stem, prepared, mime, same=prepared is data)
    except OSError:
        pass  # a read-only or full disk costs re-encoding next time, not the reply
    return prepared, mime


async def prepared_data_url(media: MediaStore, ref: ImageRef, limits: ImageLimits) -> tuple[str, ImageRef]:
    """``(data: URL, updated ref)`` for ``ref`` prepared for ``limits`` (see :func:`prepared_image`).

    The returned ref carries the data URL as ``uri`` and the prepared image's MIME type, size in
    bytes and (when known) dimensions.
    """
    data, mime = await prepared_image(media, ref, limits)
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    width, height = _dimensions(data) if mime in ("image/png", "image/jpeg") else (ref.width, ref.height)
    return url, replace(ref, uri=url, mime_type=mime, width=width, height=height, size_bytes=len(data))


def _read_cached(original: Path, stem: str) -> tuple[bytes, str] | None:
    folder = original.parent
    if (folder / f"{stem}.same").exists():
        try:
            data = original.read_bytes()
        except FileNotFoundError:
            return None
        mime = _FORMAT_MIME.get(_sniff(data))  # the stored file's own format
        return (data, mime) if mime else None
    for mime, ext in _MIME_EXT.items():
        path = folder / f"{stem}.{ext}"
        try:
            return path.read_bytes(), mime
        except FileNotFoundError:
            continue
    return None


def _write_cached(original: Path, stem: str, data: bytes, mime: str, *, same: bool) -> None:
    name = f"{stem}.same" if same else f"{stem}.{_MIME_EXT[mime]}"
    path = original.parent / name
    tmp = path.with_name(name + ".tmp")
    tmp.write_bytes(b"" if same else data)
    os.replace(tmp, path)  # atomic: readers never see half a file


def _sniff(data: bytes) -> str:
    """The pillow format name of ``data`` from its magic bytes ('' when unknown)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return ""


def _dimensions(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from the header only (no decoding)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None, None
