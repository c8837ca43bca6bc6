"""Randomised orderings, fixed invariants: nothing is lost, whatever happens when.

Each run (one seed) drives the real dispatcher, turns, scheduler and storage through the
recording connector: messages from several people in a private chat and two groups, sent with
random gaps (often none), some replying to earlier answers; ``/stop``, ``/new``, ``/switch``;
provider faults (a failure before text, one mid-stream, a burst followed by silence that only
the time cap ends); injected platform 429s; and in some runs a shutdown half-way with a
restart on the same database. After every run it checks what a user must be able to rely on:

* every accepted message is stored exactly once (also across the restart);
* every reply ends in a terminal state, and no message is left ``pending`` or ``streaming``;
* what the platform shows of each reply is what is stored (plus the interruption marker and
  the notes the user was told), and no platform message belongs to two replies;
* no typing indicator, stream or task outlives its reply;
* the platform's per-chat budget was never exceeded (only the injected 429s were seen).

``RELAYBOT_INVARIANT_RUNS`` sets the number of seeds (default 200, on SQLite; the first
``RELAYBOT_INVARIANT_PG_RUNS``, default 20, also on PostgreSQL); a failing run names its
seed, and ``RELAYBOT_INVARIANT_SEED=N`` replays just that one.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from relaybot import ChatKey, IncomingMessage, PlatformRateLimitError, StreamPolicy, User
from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.models import ReplyStatus, Role
from relaybot.core.runtime.app import Relaybot
from relaybot.core.storage import Store
from relaybot.core.storage.schema import chats, messages, platform_messages
from relaybot.core.streaming.scheduler import INTERRUPTED_MARKER
from relaybot.testing import RecordingConnector

from . import scripted_provider
from .scripted_provider import FAILURE

POLICY = StreamPolicy(
    max_length=4096, private_interval=0.02, group_interval=0.04, global_rate=0.0, typing_interval=0.05
)
GROUPS = ("g1", "g2")
PEOPLE = {"p1": ["p1"], "g1": ["ann", "ben", "cat"], "g2": ["dan", "eve"]}
TAGS = ["ok", "ok", "ok", "slow", "slow", "burst", "cut", "down"]
#: the paragraphs a reply may show after its stored text (the marker and what users are told)
NOTES = {
    INTERRUPTED_MARKER,
    "⚠️ The answer was cut off: " + FAILURE,
    "⚠️ " + FAILURE,
    "(The answer was stopped: it took longer than 0.4 seconds.)",
}
RUNS = int(os.environ.get("RELAYBOT_INVARIANT_RUNS", "200"))
#: how many of the seeds also run on PostgreSQL
PG_RUNS = int(os.environ.get("RELAYBOT_INVARIANT_PG_RUNS", "20"))
ONLY = os.environ.get("RELAYBOT_INVARIANT_SEED")
SEEDS = [int(ONLY)] if ONLY else list(range(RUNS))


def config(database: str, busy_policy: str) -> Any:
    return parse_config(
        {
            "bot": {
                "default_provider": "scripted",
                "busy_policy": busy_policy,
                "checkpoint_interval": 0.05,
                "max_reply_seconds": 0.4,
                "max_concurrent_replies": 2,
            },
            "storage": {"url": database},
            "providers": {"scripted": {"type": "scripted", "max_retries": 0}},
            "connectors": {},
        },
        "<invariants>",
    )


class Run:
    """One seeded run: the bot, its platform, and what was sent."""

    def __init__(self, seed: int, database: str) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.database = database
        self.busy_policy = self.rng.choice(["interrupt", "queue"])
        self.accepted: list[str] = []  # texts of conversation messages the bot took in
        self.injected: list[BaseException] = []
        self.connectors: list[RecordingConnector] = []
        self.app: Relaybot | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.counter = 0
        #: what happened, for the failure message
        self.log: list[str] = []

    async def start(self) -> None:
        connector = RecordingConnector(
            policy=POLICY, groups=GROUPS, first_id=1 + 10_000 * len(self.connectors)
        )
        self.connectors.append(connector)
        self.app = Relaybot(
            config(self.database, self.busy_policy),
            extra_plugins=[("scripted", scripted_provider)],
        )
        await self.app.start(connectors=[connector], start_configured=False)

    @property
    def connector(self) -> RecordingConnector:
        return self.connectors[-1]

    async def send(self, chat: str, user: str, text: str, reply_to: str | None = None) -> None:
        assert self.app is not None
        self.counter += 1
        message = IncomingMessage(
            chat=ChatKey("fake", chat),
            user=User(user, user),
            text=text,
            reply_to=reply_to,
            platform_message_id=f"u{self.counter}",
            is_private=chat not in GROUPS,
        )
        self.log.append(f"{chat}/{user}: {text!r}" + (f" (reply to {reply_to})" if reply_to else ""))
        task = await self.app.dispatcher.handle(message)
        if not text.startswith("/"):
            self.accepted.append(text)  # handle() returned: the message is stored
        self.tasks.append(task)

    async def act(self, index: int) -> None:
        rng = self.rng
        chat = rng.choice(list(PEOPLE))
        user = rng.choice(PEOPLE[chat])
        roll = rng.random()
        if roll < 0.62:
            reply_to = None
            bot_messages = self.connector.message_ids(ChatKey("fake", chat))
            if bot_messages and rng.random() < 0.3:
                reply_to = rng.choice(bot_messages)
            await self.send(chat, user, f"m{index} #{rng.choice(TAGS)}", reply_to)
        elif roll < 0.72:
            await self.send(chat, user, "/stop")
        elif roll < 0.77:
            await self.send(chat, user, "/new")
        elif roll < 0.82:
            await self.send(chat, user, "/switch 1")
        else:
            self.log.append("429 injected")
            error = PlatformRateLimitError(0.05)
            self.injected.append(error)
            self.connector.fail_next(rng.choice(["send", "edit"]), error)
        await asyncio.sleep(rng.choice([0, 0, 0, 0.002, 0.01, 0.03]))

    async def settle(self) -> None:
        """Wait until everything sent was answered and nothing is left running."""
        assert self.app is not None
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 30)
        self.tasks.clear()
        app = self.app
        for _ in range(500):
            lanes = [lane for sched in app._schedulers.values() for lane in sched._lanes.values()]
            if not app.dispatcher._tasks and not any(lane.streams for lane in lanes):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"seed {self.seed}: streams or tasks left running")
        assert not any(s.running or s.waiting for s in app.turns._chats.values()), (
            f"seed {self.seed}: turns left"
        )
        typing = self.connector.count("typing")
        await asyncio.sleep(POLICY.typing_interval * 3)
        assert self.connector.count("typing") == typing, (
            f"seed {self.seed}: a typing indicator outlived its reply"
        )


async def check(run: Run) -> None:
    """The invariants (see the module docstring), read from the database and the platforms."""
    seed = run.seed
    store = await Store.open(run.database)
    try:

        def rows(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
            stored = list(
                conn.execute(
                    sa.select(
                        messages.c.id, messages.c.role, messages.c.text, messages.c.status, chats.c.chat
                    )
                    .join(chats, chats.c.id == messages.c.chat_id)
                    .order_by(messages.c.id)
                )
            )
            links = list(
                conn.execute(
                    sa.select(platform_messages.c.platform_message_id, platform_messages.c.message_id)
                )
            )
            return stored, links

        stored, links = await store.run_sync(rows)
    finally:
        await store.close()
    users = [r.text for r in stored if r.role == Role.USER.value]
    assert sorted(users) == sorted(run.accepted), (
        f"seed {seed}: stored user messages differ from accepted ones"
    )
    assert len(set(users)) == len(users), f"seed {seed}: a message was stored twice"
    for row in stored:
        assert row.status not in (ReplyStatus.STREAMING.value, ReplyStatus.PENDING.value), (
            f"seed {seed}: message {row.id} left {row.status}"
        )
    texts: dict[str, str] = {}
    for connector in run.connectors:
        for op in connector.timeline:
            if op.op in ("send", "edit") and op.message_id is not None:
                texts[op.message_id] = connector.text_of(op.message_id)
    by_reply: dict[int, list[str]] = {}
    for platform_id, message_id in links:
        if not platform_id.startswith("u"):
            by_reply.setdefault(message_id, []).append(platform_id)
    replies = {r.id: r for r in stored if r.role == Role.ASSISTANT.value}
    shown_ids = [pid for ids in by_reply.values() for pid in ids]
    assert len(shown_ids) == len(set(shown_ids)), f"seed {seed}: a platform message belongs to two replies"
    for reply_id, platform_ids in by_reply.items():
        reply = replies[reply_id]
        shown = "".join(texts[p] for p in sorted(platform_ids, key=int))
        stored_text = reply.text.rstrip()
        if reply.status == ReplyStatus.FAILED.value:
            assert shown == stored_text, f"seed {seed}: failed reply {reply_id} shows {shown!r}"
            continue
        assert shown.startswith(stored_text), (
            f"seed {seed}: reply {reply_id} shows {shown!r}, stored {stored_text!r}"
        )
        rest = shown[len(stored_text) :].strip()
        extra = [p for p in rest.split("\n\n") if p] if rest else []
        assert all(p in NOTES for p in extra), (
            f"seed {seed}: reply {reply_id} shows more than its text: {extra}"
        )
        if reply.status == ReplyStatus.COMPLETE.value:
            assert INTERRUPTED_MARKER not in extra, (
                f"seed {seed}: complete reply {reply_id} marked interrupted"
            )
    unexpected = [
        r for c in run.connectors for r in c.rejected if not any(r.error is e for e in run.injected)
    ]
    assert unexpected == [], f"seed {seed}: the platform refused {unexpected[:3]}"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the current schema, copied for every run."""
    path = tmp_path_factory.mktemp("invariants") / "template.db"

    async def create() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{path}")
        await store.close()

    asyncio.run(create())
    return path


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path, template: Path) -> str:
    backend, seed = request.param
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    path = tmp_path / f"inv-{seed}.db"
    shutil.copyfile(template, path)  # migrated once per module: runs stay cheap
    return f"sqlite+aiosqlite:///{path}"


CASES = [("sqlite", seed) for seed in SEEDS] + [
    pytest.param(("postgres", seed), marks=pytest.mark.postgres, id=f"postgres-{seed}")
    for seed in SEEDS[:PG_RUNS]
]


@pytest.mark.parametrize("database", CASES, indirect=True)
async def test_random_orderings_keep_the_invariants(database: str, request: pytest.FixtureRequest) -> None:
    _, seed = request.node.callspec.params["database"]
    run = Run(seed, database)
    await run.start()
    steps = run.rng.randint(4, 22)
    shutdown_at = run.rng.randrange(steps) if run.rng.random() < 0.25 else -1
    try:
        for index in range(steps):
            await run.act(index)
            if index == shutdown_at:
                assert run.app is not None
                run.log.append("shutdown + restart")
                await asyncio.wait_for(run.app.stop(), 10)
                await asyncio.gather(*run.tasks, return_exceptions=True)
                run.tasks.clear()
                await run.start()  # answers what the first run left pending
        await run.settle()
    finally:
        assert run.app is not None
        await asyncio.wait_for(run.app.stop(), 10)
    try:
        await check(run)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nbusy_policy={run.busy_policy}; what happened:\n  " + "\n  ".join(run.log)
        ) from None
