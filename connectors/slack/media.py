"""Images in and out of Slack: authenticated downloads and files-v2 uploads into a thread.

Downloads: Slack serves ``url_private`` only with the bot token (``Authorization: Bearer``);
without it — or for a file the bot may not read — it answers a redirect to its sign-in page or
403, and a client that follows redirects gets an HTML page with status 200 instead of the
image. :func:`download_image` never follows redirects and checks the content type, so each of
those becomes a clear :class:`FileNotReadableError`. The size is checked before the download
when the event tells it and again while reading (:data:`MAX_IMAGE_BYTES`, 20 MB), so a
100 MB file costs nothing.

Uploads: :func:`upload_image` uses slack_sdk's ``files_upload_v2`` (``getUploadURLExternal`` →
upload → ``completeUploadExternal``), shared into the reply's thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp

from relaybot import RelaybotError

from .routing import SlackFile

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

#: the largest image read from Slack (the issue's limit, and Telegram's)
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_CHUNK = 64 * 1024


class ImageTooLargeError(RelaybotError):
    """An image is larger than the connector accepts; ``user_message`` says so politely."""


class FileNotReadableError(RelaybotError):
    """The bot may not read a file (not shared with it, deleted, or a token problem)."""


def too_large(name: str, max_bytes: int) -> ImageTooLargeError:
    """The refusal for a file over ``max_bytes``."""
    limit = human_size(max_bytes)
    return ImageTooLargeError(
        f"image {name!r} larger than {limit} refused",
        user_message=f"Sorry, “{name}” is too big — I can read images up to {limit}. "
        "Please share a smaller one.",
    )


def human_size(n: int) -> str:
    """``20 MB``, ``512 KB``, ``100 bytes``."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.3g} MB"
    if n >= 1024:
        return f"{n / 1024:.3g} KB"
    return f"{n} bytes"


def not_readable(name: str, why: str) -> FileNotReadableError:
    """The refusal for a file Slack will not give the bot (``why`` is for the log only)."""
    return FileNotReadableError(
        f"file {name!r} could not be downloaded: {why}",
        user_message=f"Sorry, I can't open “{name}” — it may not be shared with me. "
        "Try uploading it here again.",
    )


async def download_image(
    file: SlackFile,
    *,
    bot_token: str,
    max_bytes: int = MAX_IMAGE_BYTES,
    session: aiohttp.ClientSession | None = None,
) -> bytes:
    """The bytes of ``file``, fetched with the bot token.

    Raises :class:`ImageTooLargeError` (over ``max_bytes``, before or while reading) or
    :class:`FileNotReadableError` (redirect to sign-in, 403/404, an HTML page instead of the
    file). Network errors propagate as ``aiohttp.ClientError``. The token is never part of
    an error message.
    """
    if file.size is not None and file.size > max_bytes:
        raise too_large(file.name, max_bytes)
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    try:
        headers = {"Authorization": f"Bearer {bot_token}"}
        async with http.get(file.url, headers=headers, allow_redirects=False) as response:
            if 300 <= response.status < 400:
                raise not_readable(file.name, f"redirected ({response.status}): token not accepted")
            if response.status in (401, 403, 404):
                raise not_readable(file.name, f"HTTP {response.status}")
            response.raise_for_status()
            if response.content_type == "text/html":
                raise not_readable(file.name, "got an HTML page (Slack's sign-in page?)")
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_large(file.name, max_bytes)
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise too_large(file.name, max_bytes)
            return bytes(data)
    finally:
        if own:
            await http.close()


async def upload_image(
    client: AsyncWebClient,
    data: bytes,
    *,
    channel: str,
    thread_ts: str | None,
    filename: str = "image.png",
    title: str | None = None,
    alt_text: str | None = None,
    comment: str | None = None,
) -> str:
    """Upload ``data`` with files v2 and share it in ``channel`` (in ``thread_ts``); its id.

    Slack errors propagate as ``slack_sdk.errors.SlackApiError`` (``not_in_channel``,
    ``is_archived`` …): the caller decides what the person is told.
    """
    kwargs: dict[str, Any] = {"channel": channel, "content": data, "filename": filename,
                              "title": title or filename}  # fmt: skip
    if thread_ts:
        kwargs["thread_ts"] = thread_ts
    if alt_text:
        kwargs["alt_txt"] = alt_text  # (sic: Slack's argument name)
    if comment:
        kwargs["initial_comment"] = comment
    response = await client.files_upload_v2(**kwargs)
    return str(response["file"]["id"])
