"""Budget reset notices: a refused user is told once, in that chat, when the budget has room again.

Time is controlled through the guard's clock, as in the other budget tests: a refusal made on
the guard's "yesterday" has a day that has reset by the (real) time the job runs; one made now
has not. The job is run with ``run_now`` (its schedule is every 5 minutes).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from relaybot import ChatKey
from relaybot.plugins.budgets.notices import MAX_ATTEMPTS, deliver_due_notices
from relaybot.testing import FAST_POLICY, BotHarness, RecordingConnector

from .conftest import CALL_USD, MAX_OUT, budget_config

JOB = "budget_reset_notices"
RESET = "🔄 Your daily budget has reset: you can use the bot again."
log = logging.getLogger("test")


def at(bot: BotHarness, when: datetime) -> None:
    """Set the guard's clock (what a reservation and its refusal see as now)."""
    bot.app.spend_guard._clock = lambda: when  # type: ignore[union-attr]


async def spend_and_be_refused(bot: BotHarness, fake_openai, user: str, **kw) -> None:
    """``user`` uses their one call, then is refused in their chat."""
    fake_openai.add_reply(f"answer for {user}", usage=(7, MAX_OUT))
    assert await bot.say("hi", chat=f"{user}-chat", user=user, **kw) == f"answer for {user}"
    refusal = await bot.say("again", chat=f"{user}-chat", user=user, **kw)
    assert "This would go over your" in refusal, refusal


def said(bot: BotHarness, user: str) -> list[str]:
    return bot.connector.messages(bot.chat(f"{user}-chat"))


async def test_refused_user_is_told_once_after_the_period_resets(make_bot, fake_openai, database) -> None:
    bot = await make_bot(
        database=database, config=budget_config({"user": {"usd": CALL_USD, "period": "day"}})
    )
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    at(bot, today)
    await spend_and_be_refused(bot, fake_openai, "alice")
    assert "This would go over your daily budget" in await bot.say("still?", chat="alice-chat", user="alice")
    # the day has not reset yet: nothing to tell
    assert await bot.app.jobs.run_now(JOB) == "ok"
    assert RESET not in said(bot, "alice")

    # the next day: alice is told once (two refusals, one notice); bob, refused today, is not
    at(bot, today + timedelta(days=1))
    await spend_and_be_refused(bot, fake_openai, "bob")
    assert await bot.app.jobs.run_now(JOB) == "ok"
    assert said(bot, "alice")[-1] == RESET
    assert RESET not in said(bot, "bob")
    # the next runs send nothing again
    assert await bot.app.jobs.run_now(JOB) == "ok"
    assert sum(text == RESET for text in said(bot, "alice")) == 1
    assert RESET not in said(bot, "bob")
    assert len(fake_openai.requests) == 2  # refusals never reached the provider


async def test_a_refused_imagine_is_noticed_too(make_bot, fake_openai, database) -> None:
    prices = {"gpt-image-1": {"input": 0, "output": 40, "images": {"1024x1024": 0.04}}}
    config = budget_config({"user": {"usd": 0.05, "period": "week"}})
    bot = await make_bot(database=database, config={**config, "prices": prices})
    at(bot, datetime.now(UTC) - timedelta(days=8))
    await bot.say("/imagine a kite", chat="kite-chat", user="kite")
    assert "This would go over your weekly budget" in await bot.say(
        "/imagine two", chat="kite-chat", user="kite"
    )
    at(bot, datetime.now(UTC))
    assert await bot.app.jobs.run_now(JOB) == "ok"
    assert said(bot, "kite")[-1] == "🔄 Your weekly budget has reset: you can use the bot again."


async def test_rolling_window_is_noticed_once_it_has_room_again(make_bot, fake_openai, database) -> None:
    budgets = {"user": {"usd": CALL_USD, "period": "rolling", "window_hours": 24}}
    bot = await make_bot(database=database, config=budget_config(budgets))
    now = datetime.now(UTC)
    at(bot, now - timedelta(hours=26))  # carol's use has left the window since
    await spend_and_be_refused(bot, fake_openai, "carol")
    at(bot, now - timedelta(hours=2))  # dave's is still in it
    await spend_and_be_refused(bot, fake_openai, "dave")
    at(bot, now)
    assert await bot.app.jobs.run_now(JOB) == "ok"
    assert said(bot, "carol")[-1] == "🔄 Your 24-hour budget has room again: you can use the bot again."
    assert not any("room again" in text for text in said(bot, "dave"))


async def test_shared_budget_tells_a_chat_once_and_a_hopeless_call_is_not_remembered(
    make_bot, fake_openai, database
) -> None:
    # the chat's budget fits one call; two people in one group are refused by it
    bot = await make_bot(
        database=database, config=budget_config({"chat": {"usd": CALL_USD, "period": "day"}})
    )
    at(bot, datetime.now(UTC) - timedelta(days=1))
    fake_openai.add_reply("ok", usage=(7, MAX_OUT))
    assert await bot.say("hi", chat="group", user="ann", private=False) == "ok"
    for user in ("ann", "ben"):
        assert "this chat's daily budget" in await bot.say("more", chat="group", user=user, private=False)
    # a budget smaller than one call: no reset ever helps, so no notice is promised
    await bot.say("/budget set chat tiny-chat $0.0001 day", chat="admin-chat", user="admin")
    assert "this chat's daily budget" in await bot.say("hi", chat="tiny-chat", user="tim")
    at(bot, datetime.now(UTC))
    assert await bot.app.jobs.run_now(JOB) == "ok"
    notices = [t for t in bot.connector.messages(bot.chat("group")) if "has reset" in t]
    assert notices == ["🔄 This chat's daily budget has reset: you can use the bot again."]
    assert not any("has reset" in t for t in bot.connector.messages(bot.chat("tiny-chat")))


async def test_two_runners_on_one_database_send_each_notice_once_and_a_restart_none(
    make_bot, fake_openai, database
) -> None:
    config = budget_config({"user": {"usd": CALL_USD, "period": "day"}})
    first = await make_bot(database=database, config=config)
    second = await make_bot(
        database=database, config=config, connector=RecordingConnector(policy=FAST_POLICY)
    )
    at(first, datetime.now(UTC) - timedelta(days=1))
    users = [f"user{i}" for i in range(8)]
    for user in users:
        await spend_and_be_refused(first, fake_openai, user)
    at(first, datetime.now(UTC))

    def told(user: str) -> int:
        return sum(t == RESET for bot in (first, second) for t in said(bot, user))

    # both processes' jobs at once (whichever loses the job's lease skips the run) …
    outcomes = await asyncio.gather(first.app.jobs.run_now(JOB), second.app.jobs.run_now(JOB))
    assert "ok" in outcomes
    # … and, without the job lease, both deliverers at once over more notices
    more = [f"late{i}" for i in range(8)]
    at(first, datetime.now(UTC) - timedelta(days=1))
    for user in more:
        await spend_and_be_refused(first, fake_openai, user)
    at(first, datetime.now(UTC))
    sent = await asyncio.gather(
        *(
            deliver_due_notices(
                bot.app.services.spending, bot.app.services.send, now=datetime.now(UTC), log=log
            )
            for bot in (first, second)
        )
    )
    assert sum(sent) == len(more)
    assert {user: told(user) for user in users + more} == {user: 1 for user in users + more}

    # a restart on the same database sends nothing again
    await first.stop()
    await second.stop()
    third = await make_bot(database=database, config=config, connector=RecordingConnector(policy=FAST_POLICY))
    assert await third.app.jobs.run_now(JOB) == "ok"
    assert not any(said(third, user) for user in users + more)
    assert await third.app.store.due_budget_notices() == []


async def test_undeliverable_notices_are_kept_for_another_process_or_dropped_after_failures(
    make_bot, fake_openai, database
) -> None:
    bot = await make_bot(
        database=database, config=budget_config({"user": {"usd": CALL_USD, "period": "day"}})
    )
    at(bot, datetime.now(UTC) - timedelta(days=1))
    await spend_and_be_refused(bot, fake_openai, "eve")
    store = bot.app.store
    # no connector of the chat's platform runs here: given back, not counted as a failure
    calls: list[ChatKey] = []

    async def elsewhere(chat: ChatKey, text: str) -> list[str]:
        from relaybot import CapabilityError

        calls.append(chat)
        raise CapabilityError("no connector here")

    for _ in range(MAX_ATTEMPTS + 2):
        assert await deliver_due_notices(store, elsewhere, now=datetime.now(UTC), log=log) == 0
    (notice,) = await store.due_budget_notices()
    assert notice.attempts == 0 and len(calls) == MAX_ATTEMPTS + 2

    async def broken(chat: ChatKey, text: str) -> list[str]:
        raise RuntimeError("platform down")

    for _ in range(MAX_ATTEMPTS):
        await deliver_due_notices(store, broken, now=datetime.now(UTC), log=log)
    assert await store.due_budget_notices() == []  # dropped after MAX_ATTEMPTS failures
    assert RESET not in said(bot, "eve")
