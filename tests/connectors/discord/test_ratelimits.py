"""Buckets learned from the fake's ``X-RateLimit-*`` headers through discord.py's ``http_trace``."""

from __future__ import annotations

import asyncio

import pytest

from relaybot.connectors.discord.ratelimits import EDIT_ROUTE, SEND_ROUTE, BucketTracker, RouteKey, route_key
from relaybot.core.testing.fake_discord import FakeDiscordServer, bucket_hash

from .conftest import DiscordBot, World


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        ("POST", "http://x/api/v10/channels/12/messages", RouteKey(SEND_ROUTE, "12")),
        ("PATCH", "https://discord.com/api/v10/channels/12/messages/34", RouteKey(EDIT_ROUTE, "12")),
        (
            "put",
            "/api/v10/applications/5/guilds/6/commands",
            RouteKey("PUT /applications/{application_id}/guilds/{guild_id}/commands", "6"),
        ),
        (
            "POST",
            "/api/v10/interactions/7/tok/callback",
            RouteKey("POST /interactions/{interaction_id}/{interaction_token}/callback", "7:tok"),
        ),
        ("GET", "/api/v10/users/@me", RouteKey("GET /users/@me", None)),
    ],
)
def test_route_keys(method: str, url: str, expected: RouteKey) -> None:
    assert route_key(method, url) == expected


async def test_buckets_are_learned_from_every_response(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    tracker = bot.tracker
    assert tracker.sends(world.general.id) is None  # nothing learned before the first send
    channel = bot.channel(world.general)
    sent = await channel.send("one")
    await channel.send("two")
    await sent.edit(content="one, edited")
    sends, edits = tracker.sends(world.general.id), tracker.edits(world.general.id)
    assert sends is not None and edits is not None
    last_send = fake.calls_to(SEND_ROUTE)[-1].headers
    assert (sends.limit, sends.remaining) == (5, int(last_send["X-RateLimit-Remaining"])) == (5, 3)
    assert (edits.remaining, edits.bucket) == (4, bucket_hash("edit"))
    now = tracker.clock()
    assert sends.available(now) == 3 and sends.wait(now) == 0.0
    assert 0 < sends.reset_at - now <= 5.0
    # the other channel has its own window even though the bucket hash is the same
    assert tracker.sends(world.random.id) is None
    assert tracker.rate_limited == 0


async def test_requests_still_in_flight_count_against_the_bucket(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    channel = bot.channel(world.general)
    first = await channel.send("learn the bucket")
    await first.edit(content="edit 1")  # edits: 4 left
    hold = fake.hold_responses(EDIT_ROUTE)
    edits = [asyncio.create_task(first.edit(content=f"edit {i}")) for i in (2, 3, 4)]
    await fake.wait_for(lambda: hold.pending == 3)
    state = bot.tracker.edits(world.general.id)
    assert state is not None
    assert (state.remaining, state.in_flight) == (4, 3)
    assert state.available(bot.tracker.clock()) == 1  # what a scheduler may still send
    hold.release()
    await asyncio.gather(*edits)
    state = bot.tracker.edits(world.general.id)
    assert state is not None and (state.remaining, state.in_flight) == (1, 0)


def test_late_answers_never_loosen_the_state() -> None:
    now = [100.0]
    tracker = BucketTracker(clock=lambda: now[0])
    url = "http://x/api/v10/channels/1/messages/2"

    def answer(remaining: int, reset_after: float, status: int = 200) -> None:
        tracker.observe("PATCH", url, status, {
            "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset-After": str(reset_after), "X-RateLimit-Bucket": "abc",
        })  # fmt: skip

    answer(2, 4.0)
    answer(3, 4.0)  # sent earlier, arrived later: same window, more remaining — ignored
    state = tracker.edits(1)
    assert state is not None and state.remaining == 2
    now[0] += 1.0
    answer(4, 0.2)  # from a window that already ended — ignored
    assert tracker.edits(1).remaining == 2  # type: ignore[union-attr]
    now[0] += 4.0  # the window is over: a fresh answer replaces it
    answer(4, 5.0)
    assert tracker.edits(1).remaining == 4  # type: ignore[union-attr]
    answer(0, 2.5, status=429)
    state = tracker.edits(1)
    # a 429 empties the bucket until the later reset (the known window's, 5 s away): never a second 429
    assert state is not None and state.available(now[0]) == 0 and state.wait(now[0]) == pytest.approx(5.0)
    assert tracker.rate_limited == 1


async def test_429s_are_seen_and_a_global_one_pauses_everything(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    channel = bot.channel(world.general)
    fake.rate_limit_next(SEND_ROUTE, retry_after=0.2)
    await channel.send("after a 429")
    assert bot.tracker.rate_limited == 1
    fake.rate_limit_next(SEND_ROUTE, retry_after=0.3, is_global=True)
    before = bot.tracker.clock()
    await channel.send("after a global 429")  # discord.py slept it out and retried
    assert bot.tracker.rate_limited == 2
    # the pause was learned: it ends retry_after after the 429 arrived
    assert bot.tracker.global_reset_at >= before + 0.3
    assert [m.text for m in fake.bot_messages(world.general.id)] == ["after a 429", "after a global 429"]
