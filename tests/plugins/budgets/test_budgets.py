"""Budgets end to end: refusals users can act on, downgrades, settling, expiry, /budget, /usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relaybot import (
    BudgetExceededError,
    ChatKey,
    ChatMessage,
    ConfigError,
    PlannedCall,
    ProviderRequest,
    RequestOrigin,
    Role,
    from_micros,
)
from relaybot.testing import BotHarness

from .conftest import CALL_USD, MAX_OUT, budget_config


async def records(bot: BotHarness) -> list[dict]:
    return await bot.app.store.list_spend_records()


async def test_refusal_names_the_budget_what_is_left_and_when_it_resets(make_bot, fake_openai) -> None:
    bot = await make_bot(
        config=budget_config({"user": {"usd": 1.5 * CALL_USD, "period": "day"}, "timezone": "Europe/Berlin"})
    )
    fake_openai.add_reply("first answer", usage=(7, MAX_OUT))
    assert await bot.say("hi") == "first answer"
    refusal = await bot.say("and again")
    assert "This would go over your daily budget: $0.0005 of $0.0015 left" in refusal
    assert "it resets at 00:00 Europe/Berlin (in " in refusal
    assert len(fake_openai.requests) == 1
    # another user has a budget of their own
    fake_openai.add_reply("for bob", usage=(7, MAX_OUT))
    assert await bot.say("hi", chat="chat-2", user="bob") == "for bob"


async def test_token_budgets_count_input_and_output(make_bot, fake_openai) -> None:
    bot = await make_bot(config=budget_config({"chat": {"tokens": 250, "period": "week"}}))
    fake_openai.add_reply("ok", usage=(20, 30))
    assert await bot.say("hi") == "ok"
    (record,) = await records(bot)
    assert (record["input_tokens"], record["output_tokens"], record["tokens"]) == (20, 30, 50)
    # 50 used; the worst case of the next call (prompt + 100 output) still fits 250 …
    fake_openai.add_reply("ok again", usage=(20, 30))
    assert await bot.say("hi") == "ok again"
    # … and once 100 are used, a worst case above 150 does not
    refusal = await bot.say("one more " * 30)
    assert "this chat's weekly budget" in refusal and "150 of 250 tokens left" in refusal


async def test_downgrade_to_a_cheaper_model_and_say_so(make_bot, fake_openai) -> None:
    # gpt-4o's worst case is $0.01, gpt-4o-mini's $0.001; the budget has room for the latter only
    bot = await make_bot(
        config=budget_config(
            {"user": {"usd": 5 * CALL_USD, "period": "month"}}, model="gpt-4o", downgrade_to="gpt-4o-mini"
        )
    )
    fake_openai.add_reply("cheap answer", usage=(7, MAX_OUT))
    answer = await bot.say("hi")
    assert answer.startswith("cheap answer")
    assert "has no room for gpt-4o, so the cheaper gpt-4o-mini answered instead" in answer
    assert "Your monthly budget" in answer
    assert fake_openai.requests[-1].json["model"] == "gpt-4o-mini"
    (record,) = await records(bot)
    assert record["model"] == "gpt-4o-mini" and from_micros(record["cost_micros"]) == CALL_USD
    conversation = await bot.app.store.active_conversation(bot.chat())
    reply = (await bot.app.store.path(conversation.leaf_id)).messages[-1]
    assert reply.model == "gpt-4o-mini"  # stored as the model that answered


async def test_a_downgrade_that_does_not_fit_either_refuses(make_bot, fake_openai) -> None:
    bot = await make_bot(
        config=budget_config(
            {"user": {"usd": 0.5 * CALL_USD, "period": "day"}}, model="gpt-4o", downgrade_to="gpt-4o-mini"
        )
    )
    answer = await bot.say("hi")
    assert "This would go over your daily budget" in answer and not fake_openai.requests


async def test_a_provider_that_reports_no_usage_is_settled_from_our_estimate(make_bot, fake_openai) -> None:
    bot = await make_bot(config=budget_config({"global": {"tokens": 100_000, "period": "day"}}))
    text = "word " * 40
    fake_openai.add_reply(text.strip(), no_usage=True)
    await bot.say("count me")
    (record,) = await records(bot)
    assert record["state"] == "settled" and record["estimated"] is True
    assert record["input_tokens"] > 0
    # ~40 tokens of output as counted by the model's tokenizer (plus message framing)
    assert 40 <= record["output_tokens"] <= 50
    assert record["tokens"] == record["input_tokens"] + record["output_tokens"]
    assert "~" in await bot.say("/usage")


async def test_a_failed_attempt_is_released_and_the_retry_reserved_again(make_bot, fake_openai) -> None:
    bot = await make_bot(
        config=budget_config({"global": {"usd": 1.5 * CALL_USD, "period": "day"}}, max_retries=1)
    )
    fake_openai.add_error(429, "slow down", retry_after=0)
    fake_openai.add_reply("after the retry", usage=(7, MAX_OUT))
    # the budget holds one worst case: the retry fits only because the 429 released its reservation
    assert await bot.say("hi") == "after the retry"
    first, second = await records(bot)
    assert first["state"] == second["state"] == "settled"
    assert first["cost_micros"] == 0 and first["tokens"] == 0
    assert from_micros(second["cost_micros"]) == CALL_USD


async def test_a_crashed_reservation_expires(make_bot, fake_openai) -> None:
    bot = await make_bot(
        config=budget_config({"global": {"usd": CALL_USD, "period": "month"}, "reservation_ttl": 60})
    )
    guard = bot.app.spend_guard
    now = datetime.now(UTC)
    guard._clock = lambda: now
    # a process reserves the whole budget and dies before settling
    call = PlannedCall(
        provider="fake",
        model="gpt-4o-mini",
        kind="chat",
        origin=RequestOrigin(ChatKey("fake", "other"), "ghost"),
        request=ProviderRequest("", [ChatMessage.text(Role.USER, "hi")], input_tokens=5),
        max_output_tokens=MAX_OUT,
    )
    await guard.reserve(call)
    assert "This would go over the bot's monthly budget" in await bot.say("hi")
    with pytest.raises(BudgetExceededError):
        await guard.reserve(call)
    # once the reservation expired it holds nothing
    later = now + timedelta(seconds=61)
    guard._clock = lambda: later
    fake_openai.add_reply("room again", usage=(7, MAX_OUT))
    assert await bot.say("hi") == "room again"
    reserved, settled = await records(bot)
    assert reserved["state"] == "reserved" and settled["state"] == "settled"


async def test_image_generation_is_reserved_and_refused(make_bot, fake_openai) -> None:
    prices = {"gpt-image-1": {"input": 0, "output": 40, "images": {"1024x1024": 0.04}}}
    config = budget_config({"user": {"usd": 0.05, "period": "day"}})
    bot = await make_bot(config={**config, "prices": prices})
    await bot.say("/imagine a kite")
    (record,) = await records(bot)
    assert record["kind"] == "image" and record["state"] == "settled"
    assert from_micros(record["cost_micros"]) == pytest.approx(0.04224)  # 1056 output tokens × $40/M
    answer = await bot.say("/imagine another kite")
    assert "This would go over your daily budget" in answer
    assert "Generating" not in answer  # refused before it started


async def test_money_budget_with_an_unpriced_model_refuses_clearly(make_bot, fake_openai) -> None:
    bot = await make_bot(config=budget_config({"user": {"usd": 1, "period": "day"}}, model="house-model"))
    answer = await bot.say("hi")
    assert "I can't check your daily budget for house-model: its price is unknown" in answer
    assert not fake_openai.requests


async def test_budget_set_show_reset_survive_a_restart(make_bot, fake_openai, tmp_path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'persist.db'}"
    config = budget_config({"user": {"usd": 1, "period": "day"}})
    bot = await make_bot(database=db, config=config)
    assert "Only admins can change budgets." in await bot.say("/budget set user me $5 day")
    answer = await bot.say("/budget set user fake:user-1 $0.0005 week", user="admin")
    assert "User fake:user-1: $0.0005 a week" in answer
    await bot.stop()

    again = await make_bot(database=db, config=config)
    shown = await again.say("/budget")
    assert "Your weekly budget (set by an admin): $0.0000 of $0.0005" in shown
    assert "This would go over your weekly budget" in await again.say("hi")
    assert "back to the default: $1.00 a day" in await again.say("/budget reset user user-1", user="admin")
    fake_openai.add_reply("allowed", usage=(7, MAX_OUT))
    assert await again.say("hi") == "allowed"


async def test_an_admin_can_turn_a_chats_budget_off(make_bot, fake_openai) -> None:
    bot = await make_bot(config=budget_config({"chat": {"usd": 0.0001, "period": "day"}}))
    assert "this chat's daily budget" in await bot.say("hi")
    assert "no budget (off)" in await bot.say("/budget set chat here off", user="admin")
    fake_openai.add_reply("free now", usage=(7, MAX_OUT))
    assert await bot.say("hi") == "free now"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("set user me -5 usd day", "A budget can't be negative."),
        ("set user me 5000000 usd day", "more than any budget needs"),
        ("set user me 2e15 tokens day", "I don't understand"),
        ("set user me 5 day", "Say whether 5 is dollars or tokens"),
        ("set user me $5", "Add the period"),
        ("set user me $5 rolling", "rolling window's length"),
        ("set user me $5 fortnightly", "I don't understand “fortnightly”"),
        ("set chat me $5 day", None),  # "me" as a chat is the sender's user id: allowed, but odd
        ("set user here $5 day", "“here” names a chat"),
        ("frobnicate", "Usage: /budget"),
    ],
)
async def test_bad_budget_commands_say_why(make_bot, fake_openai, args: str, problem: str | None) -> None:
    bot = await make_bot(config=budget_config({}))
    answer = await bot.say(f"/budget {args}", user="admin")
    if problem is None:
        assert answer.startswith("✅")
    else:
        assert problem in answer


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"user": {"usd": -1}}, "[plugins.budgets.user.usd] Input should be greater than or equal to 0"),
        ({"global": {"usd": 1e9}}, "[plugins.budgets.global.usd] Input should be less than or equal to"),
        ({"chat": {"tokens": 10, "period": "year"}}, "[plugins.budgets.chat.period]"),
        ({"chat": {"period": "day"}}, "set usd, tokens or both"),
        ({"user": {"usd": 1, "period": "rolling"}}, "needs window_hours"),
        ({"platforms": {"fake": {"usd": 1, "window_hours": 5}}}, "only applies to period"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"usr": {"usd": 1}}, "[plugins.budgets.usr] is not a known key"),
    ],
)
async def test_bad_budget_config_stops_start_up_naming_the_key(make_bot, section, problem) -> None:
    with pytest.raises(ConfigError) as err:
        await make_bot(config=budget_config(section))
    assert problem in str(err.value)


async def test_usage_shows_spend_against_each_budget(make_bot, fake_openai) -> None:
    bot = await make_bot(
        config=budget_config(
            {
                "user": {"usd": 0.01, "period": "day"},
                "platforms": {"fake": {"tokens": 1000, "period": "month"}},
                "providers": {"fake": {"usd": 5, "period": "rolling", "window_hours": 24}},
            }
        )
    )
    fake_openai.add_reply("ok", usage=(7, MAX_OUT))
    await bot.say("hi")
    answer = await bot.say("/usage")
    assert "💰 Budgets" in answer
    assert "• Your daily budget: $0.0010 of $0.0100 ($0.0090 left); resets at 00:00 UTC" in answer
    assert "• The monthly budget of fake: 107 of 1,000 tokens (893 left)" in answer
    assert "• The 24-hour budget for fake: $0.0010 of $5.00 ($4.9990 left); resets gradually" in answer


async def test_usage_report_for_admins(make_bot, fake_openai) -> None:
    bot = await make_bot(config=budget_config({}))
    fake_openai.add_reply("a", usage=(7, MAX_OUT))
    fake_openai.add_reply("b", usage=(7, MAX_OUT))
    fake_openai.add_reply("c", usage=(7, MAX_OUT))
    await bot.say("hi", user="alice")
    await bot.say("hi", user="alice")
    await bot.say("hi", chat="chat-2", user="bob")
    assert "for admins only" in await bot.say("/usage-report", user="alice")
    report = await bot.say("/usage-report week", user="admin")
    assert "Usage report — This week" in report
    assert "Total: $0.0030 · 321 tokens · 3 replies" in report
    users = report.split("Top users:")[1].split("Top chats:")[0]
    assert users.index("fake:alice — $0.0020") < users.index("fake:bob — $0.0010")
    assert "gpt-4o-mini — $0.0030" in report
