"""Image downloads with the bot token and files-v2 uploads, against the fake Slack."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from relaybot.connectors.slack.media import (
    FileNotReadableError,
    ImageTooLargeError,
    download_image,
    upload_image,
)
from relaybot.connectors.slack.routing import RoutedMessage, Router, SlackFile
from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

slack_sdk = pytest.importorskip("slack_sdk")
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

ALICE = "U0ALICE"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackServer]:
    async with FakeSlackServer(limits=RateLimits.disabled()) as server:
        yield server


def image_of(slack: FakeSlackServer, data: bytes, **kwargs: object) -> SlackFile:
    delivery, _ = slack.share_file(slack.dm_channel(ALICE), ALICE, data, **kwargs)  # type: ignore[arg-type]
    routed = Router(slack.workspace.bot_user_id).route(delivery.payload)
    assert isinstance(routed, RoutedMessage)
    return routed.images[0]


async def test_download_with_the_bot_token(slack: FakeSlackServer) -> None:
    data = png()
    assert await download_image(image_of(slack, data), bot_token=slack.bot_token) == data


async def test_a_wrong_token_is_a_clear_refusal_not_an_html_image(slack: FakeSlackServer) -> None:
    with pytest.raises(FileNotReadableError) as info:
        await download_image(image_of(slack, png()), bot_token="xoxb-wrong-token")
    assert "xoxb-wrong-token" not in str(info.value)
    assert "can't open" in info.value.user_message
    assert slack.files.downloads[-1][1] == 302  # Slack's redirect to its sign-in page


async def test_a_file_the_bot_may_not_read(slack: FakeSlackServer) -> None:
    with pytest.raises(FileNotReadableError, match="HTTP 403"):
        await download_image(image_of(slack, png(), restricted=True), bot_token=slack.bot_token)


async def test_large_files_are_refused_before_downloading(slack: FakeSlackServer) -> None:
    big = image_of(slack, b"\0" * 2048)
    with pytest.raises(ImageTooLargeError) as info:
        await download_image(big, bot_token=slack.bot_token, max_bytes=1024)
    assert "images up to 1 KB" in info.value.user_message
    assert slack.files.downloads == []  # the size in the event was enough: nothing fetched
    huge = image_of(slack, b"\0", reported_size=100 * 1024 * 1024)  # "a 100 MB file"
    with pytest.raises(ImageTooLargeError) as info:
        await download_image(huge, bot_token=slack.bot_token)
    assert "images up to 20 MB" in info.value.user_message
    assert slack.files.downloads == []
    unknown_size = SlackFile(big.id, big.name, big.mimetype, None, big.url)
    with pytest.raises(ImageTooLargeError):  # no size given: refused while reading
        await download_image(unknown_size, bot_token=slack.bot_token, max_bytes=1024)


async def test_upload_a_generated_image_into_the_thread(slack: FakeSlackServer) -> None:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    parent = slack.mention(slack.general, ALICE, "draw").event["ts"]
    data = png()
    file_id = await upload_image(client, data, channel=slack.general, thread_ts=parent, filename="cat.png",
                                 alt_text="a red square", comment="Here you go")  # fmt: skip
    [share] = slack.replies(slack.general, parent)
    assert share.files[0]["id"] == file_id and share.text == "Here you go"
    assert slack.store.files[file_id].data == data
    slack.archive(slack.general)
    with pytest.raises(slack_sdk.errors.SlackApiError) as info:
        await upload_image(client, data, channel=slack.general, thread_ts=parent)
    assert info.value.response["error"] == "is_archived"
