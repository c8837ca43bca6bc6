"""``Store.claim_event``: a re-delivered platform event is recognised, also after a restart and
when two deliveries race (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from relaybot.core.storage import Store
from relaybot.core.storage import events as ev
from relaybot.core.storage.schema import seen_events, utcnow


async def test_an_event_is_claimed_once_per_connector(store: Store) -> None:
    assert await store.claim_event("slack", "Ev01") is True
    assert await store.claim_event("slack", "Ev01") is False
    assert await store.claim_event("slack", "Ev02") is True
    # another connector's event with the same id is its own
    assert await store.claim_event("slack-2", "Ev01") is True


async def test_racing_deliveries_have_exactly_one_winner(store: Store) -> None:
    results = await asyncio.gather(*(store.claim_event("slack", "EvRACE") for _ in range(20)))
    assert results.count(True) == 1


async def test_a_claim_survives_a_restart(db_url: str) -> None:
    first = await Store.open(db_url)
    try:
        assert await first.claim_event("slack", "Ev-restart")
    finally:
        await first.close()
    second = await Store.open(db_url)
    try:
        assert not await second.claim_event("slack", "Ev-restart")
    finally:
        await second.close()


async def test_old_claims_are_swept(store: Store, monkeypatch) -> None:
    def backdate(conn: sa.Connection) -> None:
        conn.execute(sa.update(seen_events).values(seen_at=utcnow() - ev.KEEP_EVENTS - timedelta(minutes=1)))

    assert await store.claim_event("slack", "old")
    await store.run_sync(backdate)
    monkeypatch.setattr(ev, "_SWEEP_EVERY", 0)  # sweep on the next claim
    assert await store.claim_event("slack", "new")

    def keys(conn: sa.Connection) -> list[str]:
        return [r[0] for r in conn.execute(sa.select(seen_events.c.event_key))]

    assert await store.run_sync(keys) == ["new"]
