"""/usage end to end: replies through the fake provider, usage stored, priced per model."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from relaybot import ConfigError, Role, Usage, parse_config
from relaybot.core.storage.schema import messages
from relaybot.plugins import usage as usage_plugin
from relaybot.testing import BotHarness

PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}


async def replies(bot: BotHarness) -> list:
    conv = await bot.app.store.active_conversation(bot.chat())
    return [m for m in (await bot.app.store.path(conv.leaf_id)).messages if m.role == Role.ASSISTANT]


async def backdate(bot: BotHarness, message_id: int, when: datetime) -> None:
    await bot.app.store.run_sync(
        lambda conn: conn.execute(
            sa.update(messages).where(messages.c.id == message_id).values(created_at=when)
        )
    )


async def test_usage_shows_tokens_and_cost(make_bot, fake_openai) -> None:
    bot = await make_bot(config={"plugins": {"usage": {"prices": PRICES}}})
    fake_openai.add_reply("first", usage=(1000, 200))
    fake_openai.add_reply("second", usage=(3000, 800))
    await bot.say("one")
    await bot.say("two")
    answer = await bot.say("/usage")
    # 4000 × 0.15 / 1M + 1000 × 0.60 / 1M = $0.0012
    assert "Today: 5,000 tokens (4,000 in, 1,000 out) · $0.0012" in answer
    assert "This month: 5,000 tokens (4,000 in, 1,000 out) · $0.0012" in answer
    assert "estimate" not in answer and "No price" not in answer


async def test_only_the_senders_usage_counts(make_bot, fake_openai) -> None:
    bot = await make_bot()
    fake_openai.add_reply("for alice", usage=(100, 10))
    fake_openai.add_reply("for bob", usage=(5000, 500))
    await bot.say("hi", user="alice")
    await bot.say("hi", chat="chat-2", user="bob")
    answer = await bot.say("/usage", user="alice")
    # priced from the shipped table: 100 × $0.15/M + 10 × $0.60/M = $0.000021
    assert "Today: 110 tokens (100 in, 10 out) · <$0.0001" in answer
    assert "Today: nothing yet" in await bot.say("/usage", user="carol")


async def test_today_and_this_month_in_the_configured_time_zone(make_bot, fake_openai) -> None:
    bot = await make_bot(config={"plugins": {"usage": {"prices": PRICES, "timezone": "America/New_York"}}})
    for tokens in (1_000_000, 2_000_000, 4_000_000):
        fake_openai.add_reply("ok", usage=(tokens, 0))
        await bot.say("q")
    today, earlier_this_month, last_month = await replies(bot)
    # New York is UTC-4 in March 2026 (daylight time since March 8)
    await backdate(bot, today.id, datetime(2026, 3, 20, 5, 0, tzinfo=UTC))  # 01:00 on the 20th
    await backdate(bot, earlier_this_month.id, datetime(2026, 3, 20, 3, 0, tzinfo=UTC))  # 23:00 the 19th
    await backdate(bot, last_month.id, datetime(2026, 3, 1, 3, 0, tzinfo=UTC))  # 22:00 on Feb 28
    now = datetime(2026, 3, 20, 16, 0, tzinfo=UTC)
    report = await usage_plugin.usage_report(bot.app.services, "user-1", now=now)
    assert "Today: 1,000,000 tokens (1,000,000 in, 0 out) · $0.15" in report
    assert "This month: 3,000,000 tokens (3,000,000 in, 0 out) · $0.45" in report


async def test_estimates_and_unpriced_models_are_named(make_bot, fake_openai) -> None:
    bot = await make_bot(config={"plugins": {"usage": {"prices": PRICES}}})
    fake_openai.add_reply("a", usage=(1000, 1000))
    await bot.say("priced")
    fake_openai.add_reply("b", usage=(10, 10))
    await bot.say("estimated")
    await bot.say("/imagine a kite")
    fake_openai.add_reply("c", usage=(10, 10))
    bot.app.providers["fake"].primary.model = "house-model-7"  # a model no table prices
    await bot.say("unpriced")
    _, estimated, image, unpriced = await replies(bot)
    assert unpriced.model == "house-model-7"
    await bot.app.store.update_message(estimated.id, usage=Usage(10, 10, estimated=True))
    assert image.model == "gpt-image-1"

    answer = await bot.say("/usage")
    assert "Today: ~" in answer  # the total includes an estimate
    assert "~ marks estimates" in answer
    assert "No price is configured for house-model-7" in answer
    assert "gpt-4o-mini: ~2,020 tokens (1,010 in, 1,010 out) · $0.0008" in answer  # per model
    assert "gpt-image-1: " in answer


async def test_interrupted_reply_is_counted_as_an_estimate(make_bot, fake_openai) -> None:
    """Stopped mid-stream, the provider never reports usage, yet the tokens were spent."""
    fake_openai.add_reply("slow " * 300, tokens_per_second=30)
    bot = await make_bot()
    reply = await bot.send("go on and on", wait=False)
    await asyncio.sleep(0.5)
    await bot.send("/stop")
    await reply
    [stopped] = await replies(bot)
    assert stopped.usage is not None and stopped.usage.estimated
    assert stopped.usage.input_tokens > 0 and stopped.usage.output_tokens > 0
    answer = await bot.say("/usage")
    assert "Today: ~" in answer and "~ marks estimates" in answer


def test_prices_match_snapshots_and_router_names() -> None:
    settings = usage_plugin.UsageSettings.model_validate({"prices": PRICES})
    price = settings.prices["gpt-4o-mini"].to_price()
    assert settings.price_of("gpt-4o-mini-2024-07-18") == price
    assert settings.price_of("openai/gpt-4o-mini") == price
    assert settings.price_of("gpt-4o") is None  # a different model, not a prefix match
    assert settings.price_of("gpt-4o-mini-tts") is None


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"prices": {"m": {"input": 1}}}, "prices.m.output] is required: add it"),
        ({"prices": {"m": {"input": 1, "output": 2, "cached": 0.5}}}, "prices.m.cached] is not a known key"),
        ({"prices": {"m": {"input": -1, "output": 2}}}, "greater than or equal to 0"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"price": {}}, "[plugins.usage.price] is not a known key"),
    ],
)
def test_bad_settings_name_the_key(section: dict, problem: str) -> None:
    config = parse_config({"plugins": {"usage": section}}, "relaybot.toml")
    with pytest.raises(ConfigError) as err:
        usage_plugin.SETTINGS.validate(config)
    assert problem in str(err.value) and "relaybot.toml" in str(err.value)


async def test_bad_settings_stop_the_start(make_bot, fake_openai) -> None:
    """Declared settings: a bad [plugins.usage] is a start-up error, not a log line and a broken /usage."""
    with pytest.raises(ConfigError) as err:
        await make_bot(config={"plugins": {"usage": {"prices": {"m": {"input": "cheap"}}}}})
    assert "[plugins.usage.prices.m.input]" in str(err.value)
    assert fake_openai.requests == []


def test_period_starts() -> None:
    now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)  # still Dec 31 in New York
    day, month = usage_plugin.period_starts(now, "America/New_York")
    assert day == datetime(2025, 12, 31, 5, 0, tzinfo=UTC)
    assert month == datetime(2025, 12, 1, 5, 0, tzinfo=UTC)
