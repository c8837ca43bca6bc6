"""Spend records on both backends: reserve, settle into hourly buckets, refuse, remember refusals.

PostgreSQL takes folded statements (the sums and the insert in one; the settle and the bucket
upsert in one) and SQLite the step-by-step ones: both must give the same numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from relaybot import BudgetCheck, ChatKey, Shortfall, SpendDraft
from relaybot.core.storage import Store
from relaybot.core.storage.schema import budget_notices, spend_buckets

#: 10:37 UTC: its calls belong to the 10:00 bucket
WHEN = datetime(2026, 12, 1, 10, 37, 12, tzinfo=UTC)


def draft(user: str = "t:alice", *, tokens: int = 100, micros: int | None = 1_000) -> SpendDraft:
    return SpendDraft(
        platform="t", chat="t:room", user_id=user, provider="openai", model="m", kind="chat",
        tokens=tokens, cost_micros=micros,
    )  # fmt: skip


def user_check(
    user: str = "t:alice", *, micros: int | None = 2_500, tokens: int | None = None
) -> BudgetCheck:
    return BudgetCheck(
        key=f"user:{user}", column="user_id", value=user, since=WHEN - timedelta(hours=3),
        token_limit=tokens, micros_limit=micros, resets_at=WHEN + timedelta(hours=5),
        label="your daily budget",
    )  # fmt: skip


GLOBAL = BudgetCheck(key="global", column=None, value="", since=WHEN - timedelta(days=1), micros_limit=10**9)


async def buckets(store: Store) -> dict[tuple[str, datetime], tuple[int, int]]:
    def read(conn: sa.Connection) -> dict[tuple[str, datetime], tuple[int, int]]:
        rows = conn.execute(sa.select(spend_buckets)).all()
        return {(r.scope_key, r.hour.astimezone(UTC)): (r.tokens, r.cost_micros) for r in rows}

    return await store.run_sync(read)


async def test_reserve_then_settle_counts_once_in_the_hour_it_was_reserved(store: Store) -> None:
    first = await store.reserve_spend(draft(), [user_check(), GLOBAL], ttl=600, now=WHEN)
    assert isinstance(first, int)
    # reserved: the worst case counts (100 tokens, 1,000 micros)
    assert await store.spent([user_check(), GLOBAL], now=WHEN) == [(100, 1_000), (100, 1_000)]
    settled = draft(tokens=40, micros=400)
    await store.settle_spend(first, settled)
    await store.settle_spend(first, settled)  # a second settle adds nothing
    assert await store.spent([user_check(), GLOBAL], now=WHEN) == [(40, 400), (40, 400)]
    hour = WHEN.replace(minute=0, second=0, microsecond=0)
    assert await buckets(store) == {
        (key, hour): (40, 400)
        for key in ("global", "user:t:alice", "chat:t:room", "platform:t", "provider:openai")
    }
    # a second call adds to the same buckets
    second = await store.reserve_spend(draft(), [user_check(), GLOBAL], ttl=600, now=WHEN)
    assert isinstance(second, int) and second != first
    await store.settle_spend(second, settled)
    assert (await buckets(store))[("user:t:alice", hour)] == (80, 800)
    (record,) = [r for r in await store.list_spend_records() if r["id"] == second]
    assert record["state"] == "settled" and record["expires_at"] is None and record["tokens"] == 40


async def test_a_call_that_does_not_fit_is_refused_and_nothing_is_held(store: Store) -> None:
    assert isinstance(await store.reserve_spend(draft(), [user_check(), GLOBAL], ttl=600, now=WHEN), int)
    assert isinstance(await store.reserve_spend(draft(), [user_check(), GLOBAL], ttl=600, now=WHEN), int)
    short = await store.reserve_spend(draft(), [GLOBAL, user_check()], ttl=600, now=WHEN)
    assert isinstance(short, Shortfall)
    assert short.check.key == "user:t:alice" and (short.spent_tokens, short.spent_micros) == (200, 2_000)
    assert len(await store.list_spend_records()) == 2
    # token limits too, and the limit is inclusive: 100 + 100 fits 200, a third does not
    tokens = user_check("t:bob", micros=None, tokens=200)
    assert isinstance(await store.reserve_spend(draft("t:bob"), [tokens], ttl=600, now=WHEN), int)
    assert isinstance(await store.reserve_spend(draft("t:bob"), [tokens], ttl=600, now=WHEN), int)
    assert isinstance(await store.reserve_spend(draft("t:bob"), [tokens], ttl=600, now=WHEN), Shortfall)
    # an unpriced call never fits a money budget
    unpriced = draft("t:carl", micros=None)
    assert isinstance(
        await store.reserve_spend(unpriced, [user_check("t:carl")], ttl=600, now=WHEN), Shortfall
    )
    # expired reservations stop counting
    later = WHEN + timedelta(seconds=601)
    assert isinstance(await store.reserve_spend(draft(), [user_check()], ttl=600, now=later), int)


async def test_a_refusal_with_a_chat_remembers_one_notice_per_user_and_budget(store: Store) -> None:
    room = ChatKey("t", "room", "topic-1")
    await store.reserve_spend(draft(), [user_check()], ttl=600, now=WHEN)
    await store.reserve_spend(draft(), [user_check()], ttl=600, now=WHEN)
    for minutes in (1, 2):  # refused twice: one notice, the latest refusal's
        when = WHEN + timedelta(minutes=minutes)
        assert isinstance(
            await store.reserve_spend(draft(), [user_check()], ttl=600, now=when, notify=room), Shortfall
        )
    # refused without a chat to tell (a call the core made for itself): nothing remembered
    assert isinstance(
        await store.reserve_spend(draft("t:x"), [user_check("t:x", micros=0)], ttl=600, now=WHEN), Shortfall
    )

    def read(conn: sa.Connection) -> list[sa.Row]:
        return list(conn.execute(sa.select(budget_notices)).all())

    (row,) = await store.run_sync(read)
    assert (row.user_id, row.budget_key, row.platform, row.chat, row.thread) == (
        "t:alice", "user:t:alice", "t", "room", "topic-1",
    )  # fmt: skip
    assert row.hit_at.astimezone(UTC) == WHEN + timedelta(minutes=2)
    assert await store.due_budget_notices(now=WHEN + timedelta(hours=4)) == []
    (due,) = await store.due_budget_notices(now=WHEN + timedelta(hours=5))
    assert due.chat == room and due.label == "your daily budget" and not due.rolling
    assert await store.claim_budget_notice(due) is True
    assert await store.claim_budget_notice(due) is False  # taken once only
    assert await store.due_budget_notices(now=WHEN + timedelta(days=2)) == []
