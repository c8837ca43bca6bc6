"""Images and videos in, images out: download photos, videos and image/video documents, send
photos with captions.

Downloads are refused *before* any byte is fetched when Telegram tells us the size (it does for
photos and documents), so a 1 GB file costs nothing; the downloaded bytes are checked again in
case the size was unknown. The bytes then go to the core's media store (``app.media.save``),
which validates them as an image and returns the ``media:`` reference the message carries.
"""

from __future__ import annotations

from telegram import Bot

from relaybot import RelaybotError

from .updates import ImageFile

#: Telegram's caption limit, in UTF-16 code units
MAX_CAPTION = 1024


class ImageTooLargeError(RelaybotError):
    """An image is larger than the connector accepts; ``user_message`` says so politely."""


def too_large(max_bytes: int, kind: str = "image") -> ImageTooLargeError:
    """The refusal for a file over ``max_bytes`` (``kind``: ``image`` or ``video``)."""
    mb = max_bytes / (1024 * 1024)
    limit = f"{mb:g} MB"
    if kind == "video":
        return ImageTooLargeError(
            f"video larger than {limit} refused",
            user_message=f"Sorry, that video is too big — I can watch videos up to {limit}. "
            "Please send a shorter one.",
        )
    return ImageTooLargeError(
        f"image larger than {limit} refused",
        user_message=f"Sorry, that file is too big — I can read images up to {limit}. "
        "Please send a smaller one (or send it as a photo).",
    )


async def fetch_image(bot: Bot, image: ImageFile, *, max_bytes: int) -> bytes:
    """Download ``image`` (``getFile`` + file URL). Raises :class:`ImageTooLargeError`.

    PTB errors (network, "file is too big") propagate as ``telegram.error.TelegramError``.
    """
    if image.size is not None and image.size > max_bytes:
        raise too_large(max_bytes, image.kind)
    file = await bot.get_file(image.file_id)
    if file.file_size is not None and file.file_size > max_bytes:
        raise too_large(max_bytes, image.kind)
    data = bytes(await file.download_as_bytearray())
    if len(data) > max_bytes:
        raise too_large(max_bytes, image.kind)
    return data
