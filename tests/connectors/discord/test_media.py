"""Image attachments downloaded from the fake's loopback URLs; generated images sent as files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from relaybot.connectors.discord.media import (
    ImageTooLargeError,
    NotAnImageError,
    download_image,
    image_file,
)
from relaybot.connectors.discord.routing import Router
from relaybot.core.testing.fake_discord import FakeDiscordServer

from .conftest import DiscordBot, World


def png(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buffer, "PNG")
    return buffer.getvalue()


async def test_an_image_is_downloaded_and_30_mb_is_refused_before_fetching(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    dm = fake.dm_channel(world.alice)
    small = fake.add_attachment(dm, "small.png", png())
    huge = fake.add_attachment(dm, "huge.png", size=30 * 1024 * 1024)
    message = await bot.receive(fake.send_message(dm, world.alice, "two pictures", attachments=[small, huge]))
    routed = Router(platform="discord", bot_id=bot.id).route(message)
    assert routed is not None
    first, second = routed.images
    assert await download_image(first) == png()
    with pytest.raises(ImageTooLargeError) as refused:
        await download_image(second)
    assert "up to 20 MB" in refused.value.user_message and "30.0 MB" in refused.value.user_message
    assert (small.downloads, huge.downloads) == (1, 0)  # nothing of the big one was fetched


async def test_a_lower_limit_is_checked_after_download_too(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    dm = fake.dm_channel(world.alice)
    data = png(64, 64)
    attachment = fake.add_attachment(dm, "pic.png", data)
    message = await bot.receive(fake.send_message(dm, world.alice, "", attachments=[attachment]))
    routed = Router(platform="discord", bot_id=bot.id).route(message)
    assert routed is not None
    with pytest.raises(ImageTooLargeError):
        await download_image(routed.images[0], max_bytes=len(data) - 1)


async def test_a_generated_image_is_sent_as_an_attachment(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buffer, "JPEG")
    await bot.channel(world.general).send("here you go", file=image_file(buffer.getvalue(), name="generated"))
    (stored,) = fake.bot_messages(world.general.id)
    (attachment,) = stored.attachments
    assert (attachment.filename, attachment.data) == ("generated.jpg", buffer.getvalue())
    assert stored.text == "here you go"


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(NotAnImageError):
        image_file(b"definitely not a picture")
