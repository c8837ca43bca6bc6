"""Budgets hold under concurrency: 50 requests against a budget that fits 10, on both backends."""

from __future__ import annotations

import asyncio

from relaybot import from_micros

from .conftest import CALL_USD, MAX_OUT, budget_config


async def test_fifty_concurrent_requests_against_a_budget_for_ten(make_bot, fake_openai, database) -> None:
    bot = await make_bot(
        database=database, config=budget_config({"global": {"usd": 10 * CALL_USD, "period": "day"}})
    )
    for i in range(50):
        # a little pacing so the ten answers overlap the other forty reservations
        fake_openai.add_reply(f"answer {i}", usage=(7, MAX_OUT), tokens_per_second=200)
    chats = [f"chat-{i}" for i in range(50)]
    tasks = [await bot.send("hello", chat=chat, user=f"user-{i}", wait=False) for i, chat in enumerate(chats)]
    await asyncio.gather(*tasks)

    answers = ["\n".join(bot.connector.messages(bot.chat(chat))) for chat in chats]
    answered = [a for a in answers if a.startswith("answer ")]
    refused = [a for a in answers if "This would go over the bot's daily budget" in a]
    assert len(answered) == 10 and len(refused) == 40, answers
    assert all("$0.0000 of $0.01 left" in a or "left" in a for a in refused)
    assert len(fake_openai.requests) == 10  # a refused call never reaches the provider

    records = await bot.app.store.list_spend_records()
    settled = [r for r in records if r["state"] == "settled"]
    assert len(settled) == 10 and not [r for r in records if r["state"] == "reserved"]
    spent = from_micros(sum(r["cost_micros"] for r in settled))
    assert spent <= 10 * CALL_USD + 1e-12
    assert spent == 10 * CALL_USD  # every call cost exactly its worst case
