"""Allow-lists by user, role, channel and guild; admins by user or role; one polite denial."""

from __future__ import annotations

import discord
import pytest

from relaybot.connectors.discord.access import AccessList
from relaybot.core.testing.fake_discord import FakeDiscordServer

from .conftest import DiscordBot, World


async def messages(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> dict[str, discord.Message]:
    """One message per situation, as discord.py built them."""
    thread = fake.add_thread(world.general, "a thread")
    sent = {
        "alice_general": fake.send_message(world.general, world.alice, "a"),
        "bob_general": fake.send_message(world.general, world.bob, "b"),
        "bob_random": fake.send_message(world.random, world.bob, "c"),
        "bob_thread": fake.send_message(thread, world.bob, "d"),
        "bob_dm": fake.send_message(fake.dm_channel(world.bob), world.bob, "e"),
    }
    return {name: await bot.receive(message) for name, message in sent.items()}


async def test_open_by_default(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    access = AccessList()
    assert access.open
    assert all(access.check(m).allowed for m in (await messages(fake, world, bot)).values())


async def test_users_and_roles(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    got = await messages(fake, world, bot)
    by_user = AccessList(users=[str(world.bob.id)])
    assert by_user.check(got["bob_general"]).allowed and by_user.check(got["bob_dm"]).allowed
    assert not by_user.check(got["alice_general"]).allowed
    by_role = AccessList(roles=[world.helpers.id])
    assert by_role.check(got["alice_general"]).allowed
    denied = by_role.check(got["bob_general"])
    assert (denied.allowed, denied.reason) == (False, "user not on the allow-list")
    # in a DM there is no member: roles come from the connector's look-up
    assert not by_role.check(got["bob_dm"]).allowed
    looked_up = AccessList(roles=[world.helpers.id], roles_of=lambda uid: [world.helpers.id])
    assert looked_up.check(got["bob_dm"]).allowed


async def test_channels_guilds_and_dms(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    got = await messages(fake, world, bot)
    in_general = AccessList(channels=[world.general.id])
    assert in_general.check(got["bob_general"]).allowed
    assert in_general.check(got["bob_thread"]).allowed  # a thread counts as its parent
    assert not in_general.check(got["bob_random"]).allowed
    assert in_general.check(got["bob_dm"]).allowed  # DMs are allowed unless turned off
    in_guild = AccessList(guilds=[world.guild.id], allow_dms=False)
    assert in_guild.check(got["bob_random"]).allowed
    assert (in_guild.check(got["bob_dm"]).allowed, in_guild.check(got["bob_dm"]).reason) == (
        False,
        "DMs are off",
    )
    elsewhere = AccessList(guilds=[1234])
    assert not elsewhere.check(got["bob_general"]).allowed


async def test_admins_pass_everything(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    got = await messages(fake, world, bot)
    strict = AccessList(users=[1], channels=[2], allow_dms=False, admin_users=[world.bob.id])
    for name in ("bob_general", "bob_random", "bob_dm"):
        result = strict.check(got[name])
        assert (result.allowed, result.is_admin) == (True, True)
    by_role = AccessList(users=[1], admin_roles=[world.helpers.id])
    assert by_role.is_admin(got["alice_general"]) and not by_role.is_admin(got["bob_general"])
    assert not by_role.check(got["bob_general"]).allowed


def test_a_denied_user_is_told_once() -> None:
    access = AccessList(users=[1])
    assert [access.first_denial(7), access.first_denial(7), access.first_denial(8)] == [True, False, True]


def test_a_name_instead_of_an_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"roles: '@helpers' is not a Discord id .*Copy ID"):
        AccessList(roles=["@helpers"])
