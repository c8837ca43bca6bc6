"""Images in and out: download image attachments (≤ 20 MB), build ``discord.File`` for images.

Downloads are refused *before* any byte is fetched when the attachment's size (which Discord
always states) is over the limit, so a 30 MB file costs nothing, and checked again after the
download. The bytes go through discord.py's own HTTP session (``Attachment.read``), so a proxy
or a fake server configured for discord.py applies here too.
"""

from __future__ import annotations

import io

import discord
from PIL import Image, UnidentifiedImageError

from relaybot import RelaybotError

from .routing import ImageAttachment

#: the most the providers take per image (OpenAI's limit; others are resized by the core)
MAX_IMAGE_BYTES = 20 * 1024 * 1024

_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}


class ImageTooLargeError(RelaybotError):
    """An image is larger than the connector accepts; ``user_message`` says so politely."""


class NotAnImageError(RelaybotError):
    """Bytes that should be an image are not one Pillow can read."""


def too_large(max_bytes: int, size: int | None = None) -> ImageTooLargeError:
    """The refusal for a file over ``max_bytes``."""
    limit = f"{max_bytes / (1024 * 1024):g} MB"
    got = f" ({size / (1024 * 1024):.1f} MB)" if size is not None else ""
    return ImageTooLargeError(
        f"image larger than {limit} refused{got}",
        user_message=f"Sorry, that image is too big{got} — I can read images up to {limit}. "
        "Please send a smaller one.",
    )


async def download_image(image: ImageAttachment, *, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The image's bytes, fetched through discord.py's session.

    Raises :class:`ImageTooLargeError` — before fetching anything when the stated size is over
    ``max_bytes`` — and lets discord.py's ``HTTPException`` / ``NotFound`` propagate.
    """
    if image.size > max_bytes:
        raise too_large(max_bytes, image.size)
    if image.attachment is None:
        raise ValueError("ImageAttachment without its discord.Attachment cannot be downloaded")
    data = await image.attachment.read()
    if len(data) > max_bytes:
        raise too_large(max_bytes, len(data))
    return data


def image_file(data: bytes, *, name: str = "image", description: str | None = None,
               spoiler: bool = False) -> discord.File:  # fmt: skip
    """A ``discord.File`` for generated image bytes, named with the format's extension.

    Raises :class:`NotAnImageError` when Pillow cannot read ``data`` (nothing is sent then).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAnImageError(f"not an image Pillow can read: {exc}") from exc
    extension = _EXTENSIONS.get(fmt, fmt.lower() or "bin")
    filename = f"{name}.{extension}"
    return discord.File(io.BytesIO(data), filename=filename, description=description, spoiler=spoiler)
