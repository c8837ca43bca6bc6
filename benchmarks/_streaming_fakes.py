"""The fake side of ``benchmarks/streaming.py``: Telegram + OpenAI fakes, injection, verification.

:class:`FakeWorld` starts a :class:`~relaybot.core.testing.fake_telegram.FakeTelegramServer`
with Telegram's default flood limits and a paced OpenAI-compatible server
(:mod:`_paced_openai`, lean enough not to fall behind at 1,000 streams) whose answer to
``"bench <key>"`` is :func:`reply_tokens` of that key, injects the users' messages and, at the
end, reads back what each chat shows. It runs either in the benchmark's own process or in a
child process (:func:`serve_in_child`, driven over a ``multiprocessing`` pipe), so the bot's
CPU can be measured without the fakes'.

All times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same in every process on Linux).
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from dataclasses import dataclass
from typing import Any

from _paced_openai import PacedOpenAIServer

from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits

TOKEN = "123456:BENCH-TOKEN-abcdef"
API_KEY = "sk-bench-key"
BOT_USERNAME = "relaybot_test_bot"
#: the forum supergroup whose topics carry the group streams
GROUP_ID = -1001000000001
#: the request methods that show the user something (the "platform requests" of a reply)
FRAME_METHODS = ("sendMessage", "editMessageText", "sendMessageDraft")
#: what counts as first feedback: typing, a draft (the empty "Thinking…" one too) or a message
FEEDBACK_METHODS = ("sendChatAction", *FRAME_METHODS)

_WORDS = (
    "stream budget frame chat token reply lane pace edit draft message topic group private "
    "latency window burst limit quiet steady clear answer model server client buffer signal "
    "river stone cloud paper green amber silver orange window garden winter summer north south"
).split()


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: ``chats`` private chats, ``topics`` forum topics in one group."""

    chats: int
    topics: int
    tokens: int
    rate: float
    first_token_delay: float = 0.0
    #: spread the injections evenly over this many seconds (0: all at once)
    ramp: float = 0.0
    #: people mentioning the bot at the same moment in the group itself (no topic): one
    #: shared chat, answered concurrently, each answer a reply to its question
    group_users: int = 0

    def keys(self) -> list[str]:
        """One key per expected reply: ``p<chat id>``, ``g<topic id>`` or ``u<group user>``."""
        return (
            [f"p{c}" for c in range(1, self.chats + 1)]
            + [f"g{t}" for t in range(1, self.topics + 1)]
            + [f"u{n}" for n in range(1, self.group_users + 1)]
        )


def reply_tokens(key: str, count: int) -> list[str]:
    """The provider's answer for ``key`` as ``count`` tokens (one SSE chunk each).

    Plain words and punctuation only, so the visible Telegram text (Markdown rendered to
    entities) equals the provider's text character for character.
    """
    rng = random.Random(key)
    tokens: list[str] = []
    sentence = 0
    for i in range(count):
        word = rng.choice(_WORDS)
        if i == 0:
            tokens.append(word.capitalize())
        elif sentence >= rng.randint(8, 16):
            sentence = 0
            tokens.append(("\n\n" if rng.random() < 0.25 else " ") + word.capitalize())
        else:
            tokens.append(" " + word)
        sentence += 1
        if i == count - 1:
            tokens[-1] += "."
        elif sentence >= 8 and rng.random() < 0.3:
            tokens[-1] += "."
            sentence = 99  # next token starts a sentence
    return tokens


def user_text(key: str) -> str:
    """What the user sends for ``key`` (group messages mention the bot, as groups require)."""
    return f"@{BOT_USERNAME} bench {key}" if key[0] in "gu" else f"bench {key}"


class FakeWorld:
    """Both fakes, the injection of the users' messages and the read-back of every chat."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.tg = FakeTelegramServer(token=TOKEN, limits=FloodLimits(), bot_username=BOT_USERNAME)
        self.openai = PacedOpenAIServer(
            api_key=API_KEY,
            tokens=lambda key: reply_tokens(key, plan.tokens),
            rate=plan.rate,
            first_token_delay=plan.first_token_delay,
        )
        self.injected: dict[str, float] = {}
        #: the group users' questions: key -> Telegram message id (their answers reply to it)
        self.questions: dict[str, int] = {}
        self._inject_task: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        """Start both servers; return the URLs the bot needs."""
        await self.tg.start()
        await self.openai.start()
        if self.plan.topics or self.plan.group_users:
            self.tg.add_chat(GROUP_ID, "supergroup", title="Bench forum", is_forum=True)
        return {
            "bot_base_url": self.tg.bot_base_url,
            "file_base_url": self.tg.file_base_url,
            "openai_base_url": self.openai.base_url,
        }

    async def stop(self) -> None:
        await self.openai.stop()
        await self.tg.stop()

    def inject(self) -> None:
        """Inject every user message (all at once, or spread over ``plan.ramp`` seconds)."""
        keys = self.plan.keys()
        if self.plan.ramp <= 0:
            for key in keys:
                self._inject_one(key)
            return
        # interleave private chats and topics so both kinds see the same ramp
        random.Random(0).shuffle(keys)
        self._inject_task = asyncio.get_running_loop().create_task(self._ramp(keys))

    async def _ramp(self, keys: list[str]) -> None:
        start = time.monotonic()
        step = self.plan.ramp / max(1, len(keys))
        for n, key in enumerate(keys):
            delay = start + n * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._inject_one(key)

    def _inject_one(self, key: str) -> None:
        self.injected[key] = time.monotonic()
        if key.startswith("p"):
            chat = int(key[1:])
            self.tg.send_user_message(chat, user_text(key), user_id=chat)
        elif key.startswith("u"):
            sent = self.tg.send_user_message(GROUP_ID, user_text(key), user_id=200_000 + int(key[1:]))
            self.questions[key] = sent["message_id"]
        else:
            self.tg.send_user_message(
                GROUP_ID, user_text(key), user_id=100_000 + int(key[1:]), thread_id=int(key[1:])
            )

    def progress(self) -> dict[str, Any]:
        """Cheap counters for progress lines."""
        return {"requests": len(self.tg.timeline), "platform_429": self.tg.count_429}

    def collect(self) -> dict[str, Any]:
        """Per reply: visible text check, first feedback, requests; plus totals."""
        tg = self.tg
        store = tg.store
        replies: dict[str, Any] = {}
        group_records = tg.chat_timeline(GROUP_ID) if self.plan.topics or self.plan.group_users else []
        for key in self.plan.keys():
            injected = self.injected.get(key)
            expected = "".join(reply_tokens(key, self.plan.tokens))
            if key.startswith("p"):
                chat = int(key[1:])
                records = tg.chat_timeline(chat)
                shown = [m.text for m in tg.messages(chat)]
            elif key.startswith("u"):
                # one group, several people: an answer is the bot message replying to the question
                question = self.questions.get(key)
                mine = [
                    m for m in tg.messages(GROUP_ID)
                    if m.thread_id is None
                    and (m.api.get("reply_to_message") or {}).get("message_id") == question
                ]  # fmt: skip
                ids = {m.message_id for m in mine}
                records = [
                    r for r in group_records
                    if r.message_id in ids or (r.method == "sendChatAction" and _thread_of(store, r) is None)
                ]  # fmt: skip
                shown = [m.text for m in mine]
            else:
                thread = int(key[1:])
                records = [r for r in group_records if _thread_of(store, r) == thread]
                shown = [m.text for m in tg.messages(GROUP_ID) if m.thread_id == thread]
            feedback = next(
                (r.t for r in records
                 if r.method in FEEDBACK_METHODS and r.status_code == 200
                 and injected is not None and r.t >= injected),
                None,
            )  # fmt: skip
            frames = [r for r in records if r.method in FRAME_METHODS]
            joined = " ".join(" ".join(shown).split())
            replies[key] = {
                "injected": injected,
                "feedback_ms": None if feedback is None or injected is None else (feedback - injected) * 1000,
                "messages": len(shown),
                "exact": len(shown) == 1 and shown[0] == expected,
                "identical": joined == " ".join(expected.split()),
                "requests": len(frames),
                "drafts": sum(r.method == "sendMessageDraft" for r in frames),
                "typing": sum(r.method == "sendChatAction" for r in records),
                "rate_limited": sum(r.status_code == 429 for r in records),
                "last_frame_at": max((r.t for r in frames if r.status_code == 200), default=None),
                "first_text_at": min((r.t for r in frames if r.status_code == 200), default=None),
            }
        errors: dict[str, int] = {}
        for record in tg.timeline:
            if record.status_code not in (200, 429):
                text = str(record.extra.get("description", ""))[:80]
                errors[f"{record.method} {record.status_code} {text}"] = (
                    errors.get(f"{record.method} {record.status_code} {text}", 0) + 1
                )
        return {
            "replies": replies,
            "platform_429": tg.count_429,
            "platform_429_rules": dict(tg.flood.violations),
            "platform_errors": errors,
            "requests_total": len(tg.timeline),
            "provider_requests": self.openai.requests,
            "provider_spans": list(self.openai.spans),
        }


def _thread_of(store: Any, record: Any) -> int | None:
    if record.method == "sendChatAction":
        return record.extra.get("thread_id")
    if record.message_id is not None:
        message = store.messages.get((record.chat_id, record.message_id))
        if message is not None:
            return message.thread_id
    return None


def cpu_seconds() -> float:
    """User + system CPU of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- child process ------------------------------------------------------------------------------


def serve_in_child(conn: Any, plan: Plan) -> None:
    """Entry point of the fakes' process: run :class:`FakeWorld`, obey the parent's commands.

    Commands (sent as ``(name,)`` tuples): ``inject``, ``progress``, ``collect``, ``stop``;
    each is answered with one picklable value. The first message sent is the URL dict.
    """
    asyncio.run(_child_main(conn, plan))


async def _child_main(conn: Any, plan: Plan) -> None:
    world = FakeWorld(plan)
    conn.send(await world.start())
    cpu_start = cpu_seconds()
    try:
        while True:
            (command,) = await asyncio.to_thread(conn.recv)
            if command == "inject":
                cpu_start = cpu_seconds()
                world.inject()
                conn.send(None)
            elif command == "progress":
                conn.send(world.progress())
            elif command == "collect":
                conn.send({**world.collect(), "fakes_cpu_s": cpu_seconds() - cpu_start,
                           "fakes_rss_mb": _rss_mb()})  # fmt: skip
            elif command == "stop":
                break
    finally:
        await world.stop()
        conn.send("stopped")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
