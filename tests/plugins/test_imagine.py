"""/imagine end to end: a real bot, the fake OpenAI images API, the recording connector."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace

import httpx
import pytest
from PIL import Image

from relaybot import ConfigError, ImagePart, PlatformRateLimitError, Role, TextPart, parse_config
from relaybot.core.testing.pytest_plugin import FAST_POLICY
from relaybot.plugins import imagine as imagine_plugin
from relaybot.testing import BotHarness, FakeOpenAIServer, RecordingConnector


async def active_path(bot: BotHarness) -> list:
    conv = await bot.app.store.active_conversation(bot.chat())
    if conv is None or conv.leaf_id is None:
        return []
    return list((await bot.app.store.path(conv.leaf_id)).messages)


def image_requests(fake: FakeOpenAIServer) -> list[dict]:
    return [r.json for r in fake.requests if r.path == "/v1/images/generations"]


async def test_imagine_sends_the_picture_and_stores_it(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    answer = await bot.say("/imagine a red fox in the snow")
    # the progress notice was shown, then the image took its place: it is not left behind
    [notice] = recording_connector.ops(bot.chat(), "send")
    assert notice.text.startswith("🎨 Generating") and notice.outgoing.kind == "command"
    assert answer == "a red fox in the snow"
    [deleted] = recording_connector.ops(bot.chat(), "delete")
    assert deleted.message_id == notice.message_id

    [request] = image_requests(fake_openai)
    assert request == {
        "model": "gpt-image-1",
        "prompt": "a red fox in the snow",
        "n": 1,
        "size": "1024x1024",
        "quality": "auto",
    }  # no response_format: GPT image models reject it and always answer in base64
    headers = fake_openai.requests[-1].headers
    assert headers["authorization"] == "Bearer sk-test-key"

    [sent] = recording_connector.ops(bot.chat(), "image")
    assert sent.text == "a red fox in the snow"  # the caption
    assert deleted.t > sent.t  # removed only once the picture is there

    user, reply = await active_path(bot)
    assert (user.role, user.text, user.user_id) == (Role.USER, "/imagine a red fox in the snow", "user-1")
    assert reply.role == Role.ASSISTANT and reply.model == "gpt-image-1" and reply.provider == "fake"
    image, caption = reply.parts
    assert isinstance(image, ImagePart) and caption == TextPart("a red fox in the snow")
    png = Image.open(io.BytesIO(await bot.app.media.load(image.image)))
    assert png.format == "PNG" and png.size == (64, 64)
    assert reply.usage is not None and reply.usage.output_tokens > 0  # gpt-image reports tokens
    # the platform message maps to the stored image (replying to it continues from there)
    found = await bot.app.store.find_by_platform_id(bot.chat(), sent.message_id)
    assert found is not None and found.id == reply.id
    assert (sent.outgoing.conversation_id, sent.outgoing.reply_id) == (reply.conversation_id, reply.id)

    history = await bot.say("/history")
    assert "/imagine a red fox in the snow" in history and "assistant: a red fox in the snow" in history
    export = await bot.say("/export")
    assert f"![image]({image.image.uri})" in export


async def test_the_next_question_knows_a_picture_was_shown(make_bot, fake_openai) -> None:
    bot = await make_bot()
    await bot.say("/imagine a blue square")
    assert await bot.say("what colour is it?") == "You said: what colour is it?"  # no note
    messages = fake_openai.requests[-1].json["messages"]
    # chat APIs refuse images in assistant turns: the model reads a marker and the caption
    assert {"role": "assistant", "content": "[generated image] a blue square"} in messages
    assert {"role": "user", "content": "/imagine a blue square"} in messages


async def test_dall_e_3_options(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot(
        config={"plugins": {"imagine": {"model": "dall-e-3", "size": "1792x1024", "quality": "hd"}}}
    )
    fake_openai.add_image(revised_prompt="A detailed watercolour of a lighthouse at dawn")
    await bot.say("/imagine lighthouse at dawn")
    [request] = image_requests(fake_openai)
    assert request["n"] == 1 and request["size"] == "1792x1024" and request["quality"] == "hd"
    assert request["response_format"] == "b64_json"
    assert recording_connector.count("image", bot.chat()) == 1
    reply = (await active_path(bot))[-1]
    image = Image.open(io.BytesIO(await bot.app.media.load(reply.parts[0].image)))
    assert image.size == (112, 64)  # the fake draws 1/16 of the requested size


async def test_progress_while_generating(make_bot, fake_openai) -> None:
    # typing comes from the scheduler (the policy's typing interval), like for any reply
    connector = RecordingConnector(replace(FAST_POLICY, typing_interval=0.05))
    bot = await make_bot(connector=connector)
    fake_openai.add_image(delay=0.6)
    await bot.say("/imagine a slow picture")
    ops = [op.op for op in connector.ops(bot.chat())]
    assert connector.ops(bot.chat(), "send")[0].text.startswith("🎨")
    assert ops[-2:] == ["image", "delete"]
    assert ops.count("typing") >= 3  # refreshed while waiting, not just once
    assert connector.ops(bot.chat(), "typing")[-1].t < connector.ops(bot.chat(), "image")[0].t


async def test_the_picture_waits_out_a_platform_429(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    recording_connector.fail_next("image", PlatformRateLimitError(0.3))
    await bot.say("/imagine a patient cat")
    [sent] = recording_connector.ops(bot.chat(), "image")
    assert sent.t >= recording_connector.rejected[0].t + 0.29  # paced by the scheduler
    assert recording_connector.messages(bot.chat()) == ["a patient cat"]


@pytest.mark.parametrize(
    ("status", "message", "code", "expected"),
    [
        (400, "Your request was rejected as a result of our safety system.", "content_policy_violation",
         "safety system rejected the prompt"),
        (400, "Your request was rejected by the safety system.", "moderation_blocked", "safety system"),
        (429, "Rate limit reached for images per minute", None, "busy (rate limited)"),
        (500, "The server had an error", None, "unavailable right now"),
        (401, "Incorrect API key provided", "invalid_api_key", "rejected its credentials"),
    ],
)  # fmt: skip
async def test_failures_give_a_clear_message_and_store_nothing(
    make_bot, fake_openai, recording_connector, status, message, code, expected
) -> None:
    # a 429 asking for 20 s is more than this provider waits (retry_max_wait): no retry
    bot = await make_bot(config={"providers": {"fake": {"retry_max_wait": 5, "max_retries": 2}}})
    for _ in range(3):  # transient errors are retried (max_retries = 2): fail every attempt
        fake_openai.add_error(status, message, code=code, retry_after=20 if status == 429 else None)
    answer = await bot.say("/imagine something")
    assert expected in answer
    assert "sk-test-key" not in answer
    assert "Generating" not in answer  # the notice turned into the error
    assert recording_connector.count("image") == 0
    assert await active_path(bot) == []
    attempts = len(image_requests(fake_openai))
    assert attempts == (3 if status == 500 else 1)  # only the transient error was retried
    if status == 429:
        assert "about 20 s" in answer


async def test_a_transient_failure_is_retried_by_the_resilience_layer(
    make_bot, fake_openai, recording_connector
) -> None:
    bot = await make_bot()
    fake_openai.add_error(503, "overloaded")
    assert await bot.say("/imagine a second try") == "a second try"
    assert len(image_requests(fake_openai)) == 2
    assert recording_connector.count("image") == 1


async def test_bot_keeps_answering_after_a_failed_picture(make_bot, fake_openai) -> None:
    bot = await make_bot(config={"providers": {"fake": {"max_retries": 0}}})
    fake_openai.add_error(503, "overloaded")
    await bot.say("/imagine a cat")
    assert await bot.say("hello") == "You said: hello"
    assert "a cat" not in str(fake_openai.requests[-1].json["messages"])


async def test_one_picture_at_a_time_per_chat(make_bot, fake_openai, recording_connector) -> None:
    bot = await make_bot()
    fake_openai.add_image(delay=0.5)
    first = await bot.send("/imagine a slow one", wait=False)
    await asyncio.sleep(0.2)
    assert "One at a time" in await bot.say("/imagine another")
    assert "You said: meanwhile" in await bot.say("meanwhile")  # chatting is not blocked
    await first
    assert len(image_requests(fake_openai)) == 1
    assert recording_connector.count("image") == 1


async def test_empty_prompt_explains_usage(make_bot, fake_openai) -> None:
    bot = await make_bot()
    assert "Describe the picture" in await bot.say("/imagine   ")
    assert image_requests(fake_openai) == []


async def test_invalid_config_is_refused_before_any_request(make_bot, fake_openai) -> None:
    """Declared settings: a bad [plugins.imagine] stops the start, naming the key and the fix."""
    with pytest.raises(ConfigError) as err:
        await make_bot(config={"plugins": {"imagine": {"model": "dall-e-3", "size": "1536x1024"}}})
    assert "plugins.imagine" in str(err.value) and "1536x1024" in str(err.value)
    assert image_requests(fake_openai) == []


async def test_no_openai_provider_without_a_table_is_explained_when_used(make_bot, fake_openai) -> None:
    """/imagine is optional: with no [plugins.imagine] table the bot starts, /imagine explains."""
    bot = await make_bot(config={"providers": {"fake": {"type": "anthropic", "api_key": "k"}}})
    assert "not set up correctly" in await bot.say("/imagine a tree")


def test_settings_are_strict() -> None:
    config = parse_config(
        {"providers": {"main": {"type": "anthropic"}}, "plugins": {"imagine": {"modle": "gpt-image-1"}}},
        "relaybot.toml",
    )
    with pytest.raises(ConfigError, match=r"\[plugins.imagine.modle\] is not a known key"):
        imagine_plugin.SETTINGS.validate(config)
    with pytest.raises(ConfigError, match=r"no \[providers.\*\] table of type openai"):
        imagine_plugin._provider_name(config, imagine_plugin.ImagineSettings())
    with pytest.raises(ConfigError, match="not of type openai"):
        imagine_plugin._provider_name(config, imagine_plugin.ImagineSettings(provider="main"))
    # with the table present, the provider rule is part of the validation
    wrong = parse_config(
        {"providers": {"main": {"type": "anthropic"}}, "plugins": {"imagine": {"provider": "main"}}},
        "relaybot.toml",
    )
    with pytest.raises(ConfigError, match=r"relaybot.toml: \[plugins.imagine.provider\] .*not of type"):
        imagine_plugin.SETTINGS.validate(wrong)
    with pytest.raises(ValueError, match="quality 'hd' is not offered by gpt-image-1"):
        imagine_plugin.ImagineSettings(quality="hd")


# ── the fake images API itself behaves like the real one ────────────────────────────────────


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"model": "dall-e-3", "prompt": "x", "n": 2}, 400, "n=1"),
        ({"model": "dall-e-3", "prompt": "x", "size": "1536x1024"}, 400, "Supported values"),
        ({"model": "gpt-image-1", "prompt": "x", "response_format": "b64_json"}, 400, "response_format"),
        ({"model": "gpt-image-1", "prompt": "x", "quality": "hd"}, 400, "quality"),
        ({"model": "gpt-image-1"}, 400, "prompt"),
        ({"model": "midjourney", "prompt": "x"}, 404, "does not exist"),
    ],
)
async def test_fake_validates_options_like_the_api(fake_openai, body, status, text) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(fake_openai.base_url + "/images/generations", json=body)
    assert response.status_code == status and text in response.json()["error"]["message"]


async def test_fake_serves_dall_e_urls(fake_openai) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            fake_openai.base_url + "/images/generations", json={"model": "dall-e-3", "prompt": "a boat"}
        )
        item = response.json()["data"][0]
        assert item["revised_prompt"] == "a boat"
        image = await client.get(item["url"])
    assert Image.open(io.BytesIO(image.content)).size == (64, 64)
