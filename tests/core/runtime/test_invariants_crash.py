"""A crash at a random moment (SIGKILL of a bot process) loses no accepted message.

The child process runs a real bot (scripted provider, recording connector) and sends messages
from several people in a private chat and a group with random gaps, printing ``accepted …``
after each one was taken in (the dispatcher returned: it is stored). The parent kills it with
SIGKILL at a random moment, starts a bot on the same database, and checks: every accepted
message is stored exactly once, nothing is left ``streaming`` or ``pending`` once the restarted
bot has answered what was left, and the replies cut off by the crash are ``interrupted``.

``RELAYBOT_CRASH_RUNS`` sets the number of seeds (default 4).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from relaybot import StreamPolicy
from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.models import ReplyStatus, Role
from relaybot.core.runtime.app import Relaybot
from relaybot.core.storage import Store
from relaybot.core.storage.schema import messages
from relaybot.testing import RecordingConnector

from . import scripted_provider

RUNS = int(os.environ.get("RELAYBOT_CRASH_RUNS", "4"))
POLICY = StreamPolicy(max_length=4096, private_interval=0.02, group_interval=0.04, global_rate=0.0)
CHILD = r"""
import asyncio, importlib.util, random, sys
spec = importlib.util.spec_from_file_location("scripted_provider", sys.argv[3])
provider = importlib.util.module_from_spec(spec); spec.loader.exec_module(provider)
from relaybot import ChatKey, IncomingMessage, StreamPolicy, User
from relaybot.core.runtime.app import Relaybot
from relaybot.core.cli.config import parse_config
from relaybot.testing import RecordingConnector

async def main(seed, database):
    rng = random.Random(seed)
    config = parse_config({
        "bot": {"default_provider": "scripted", "checkpoint_interval": 0.05,
                "busy_policy": rng.choice(["interrupt", "queue"])},
        "storage": {"url": database},
        "providers": {"scripted": {"type": "scripted", "max_retries": 0}},
        "connectors": {},
    }, "<child>")
    app = Relaybot(config, extra_plugins=[("scripted", provider)])
    policy = StreamPolicy(max_length=4096, private_interval=0.02, group_interval=0.04, global_rate=0.0)
    await app.start(connectors=[RecordingConnector(policy=policy, groups=["g1"])], start_configured=False)
    print("ready", flush=True)
    for i in range(400):
        chat = rng.choice(["p1", "g1"])
        user = "p1" if chat == "p1" else rng.choice(["ann", "ben", "cat"])
        text = f"m{i} #" + rng.choice(["ok", "slow", "slow", "burst", "cut"])
        await app.dispatcher.handle(IncomingMessage(
            chat=ChatKey("fake", chat), user=User(user), text=text,
            platform_message_id=f"u{i}", is_private=chat == "p1"))
        print("accepted", text, flush=True)
        await asyncio.sleep(rng.choice([0, 0, 0.01, 0.05, 0.1]))

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


async def run_child_until_killed(seed: int, database: str, tmp_path: Path) -> list[str]:
    """Start the child, kill it with SIGKILL after a random number of accepted messages."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    kill_after = random.Random(seed).randint(3, 25)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(seed), database, scripted_provider.__file__,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    accepted: list[str] = []
    try:
        assert (await asyncio.wait_for(process.stdout.readline(), 60)).strip() == b"ready"
        while len(accepted) < kill_after:
            line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
            assert line.startswith("accepted "), line
            accepted.append(line.removeprefix("accepted "))
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    return accepted


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(RUNS))
async def test_a_killed_bot_loses_no_accepted_message(seed: int, tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    accepted = await run_child_until_killed(seed, database, tmp_path)

    store = await Store.open(database)
    try:
        before = await store.run_sync(all_messages)
    finally:
        await store.close()
    users = [r.text for r in before if r.role == Role.USER.value]
    assert len(users) == len(set(users)), f"seed {seed}: a message was stored twice"
    assert set(accepted) <= set(users), f"seed {seed}: accepted but not stored: {set(accepted) - set(users)}"

    # restart: cut-off replies become interrupted, unanswered messages are answered
    config = parse_config(
        {
            "bot": {"default_provider": "scripted", "checkpoint_interval": 0.05, "max_reply_seconds": 0.5},
            "storage": {"url": database},
            "providers": {"scripted": {"type": "scripted", "max_retries": 0}},
            "connectors": {},
        },
        "<restart>",
    )
    app = Relaybot(config, extra_plugins=[("scripted", scripted_provider)])
    await app.start(
        connectors=[RecordingConnector(policy=POLICY, groups=["g1"], first_id=100_000)],
        start_configured=False,
    )
    try:
        for _ in range(3000):
            if not await app.store.pending_messages() and not app.dispatcher._tasks:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"seed {seed}: the restarted bot did not answer what was left")
    finally:
        await app.stop()
    store = await Store.open(database)
    try:
        after = await store.run_sync(all_messages)
    finally:
        await store.close()
    users_after = [r.text for r in after if r.role == Role.USER.value]
    assert sorted(users_after) == sorted(users), f"seed {seed}: the restart changed the stored messages"
    left = [
        (r.id, r.status)
        for r in after
        if r.status in (ReplyStatus.STREAMING.value, ReplyStatus.PENDING.value)
    ]
    assert left == [], f"seed {seed}: left unfinished after the restart: {left}"
    streaming_before = {r.id for r in before if r.status == ReplyStatus.STREAMING.value}
    statuses = {r.id: r.status for r in after}
    assert all(statuses[i] == ReplyStatus.INTERRUPTED.value for i in streaming_before)


def all_messages(conn: sa.Connection) -> list[Any]:
    return list(
        conn.execute(
            sa.select(messages.c.id, messages.c.role, messages.c.text, messages.c.status).order_by(
                messages.c.id
            )
        )
    )
