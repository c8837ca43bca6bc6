"""The fake side of ``benchmarks/streaming.py --platform discord``: Discord + OpenAI fakes.

:class:`DiscordWorld` starts a :class:`~relaybot.testing.FakeDiscordServer` with Discord's
observed limits (5 sends and 5 edits per 5 s per channel, 50 requests/s overall, real 429s) and
the paced OpenAI-compatible server, puts ``channels`` text channels with ``per_channel`` people
each and ``dms`` people writing in DMs into it, injects their messages (channel people mention
the bot), and at the end reads back every answer: the chain of bot messages starting with the
reply to the question, each part replying to the previous one. It runs in a child process
(:func:`serve_in_child`) so the bot's CPU is measured without the fakes'.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from dataclasses import dataclass
from typing import Any

from _paced_openai import PacedOpenAIServer
from _streaming_fakes import reply_tokens

from relaybot.testing import FakeDiscordServer

API_KEY = "sk-bench-key"
SEND = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class DiscordPlan:
    """``channels`` channels with ``per_channel`` concurrent askers each, plus ``dms`` DMs."""

    channels: int
    per_channel: int
    dms: int
    tokens: int
    rate: float
    first_token_delay: float = 0.0

    def keys(self) -> list[str]:
        """``c<channel>x<person>`` for channel askers, ``d<n>`` for DMs."""
        return [f"c{c}x{p}" for c in range(1, self.channels + 1) for p in range(1, self.per_channel + 1)] + [
            f"d{n}" for n in range(1, self.dms + 1)
        ]


def discord_tokens(key: str, count: int) -> list[str]:
    """The answer for ``key``: prose, a code block in the middle (so splits cross code), prose."""
    words = reply_tokens(key, count)
    if count < 40:
        return words
    third = count // 3
    code = [f"\n    value_{i} = compute({i})" for i in range(third)]
    return [*words[:third], "\n\n```python", *code, "\n```\n\n", *words[2 * third :]]


def normalised(text: str) -> str:
    """Without fence lines, whitespace collapsed: what a split must keep exactly."""
    lines = [line for line in text.splitlines() if not _FENCE.match(line)]
    return " ".join(" ".join(lines).split())


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class DiscordWorld:
    """Both fakes, the injection and the read-back (see the module docstring)."""

    def __init__(self, plan: DiscordPlan) -> None:
        self.plan = plan
        self.discord = FakeDiscordServer()
        self.openai = PacedOpenAIServer(
            api_key=API_KEY, tokens=lambda key: discord_tokens(key, plan.tokens), rate=plan.rate,
            first_token_delay=plan.first_token_delay,
        )  # fmt: skip
        self.injected: dict[str, float] = {}
        self.questions: dict[str, Any] = {}
        self.where: dict[str, int] = {}
        self._channels: list[Any] = []
        self._people: dict[str, Any] = {}

    async def start(self) -> dict[str, str]:
        await self.discord.start()
        await self.openai.start()
        fake = self.discord
        guild = fake.add_guild("Bench", channels=[f"bench-{c}" for c in range(1, self.plan.channels + 1)])
        self._channels = [fake.channel(guild, f"bench-{c}") for c in range(1, self.plan.channels + 1)]
        for key in self.plan.keys():
            person = fake.add_user(f"user-{key}")
            if key.startswith("c"):
                fake.add_member(guild, person)
            self._people[key] = person
        return {
            "token": fake.token, "api_base": fake.api_base, "gateway_url": fake.gateway_url,
            "openai_base_url": self.openai.base_url,
        }  # fmt: skip

    async def stop(self) -> None:
        await self.openai.stop()
        await self.discord.stop()

    def inject(self) -> None:
        fake = self.discord
        for key in self.plan.keys():
            person = self._people[key]
            self.injected[key] = time.monotonic()
            if key.startswith("c"):
                channel = self._channels[int(key[1:].split("x")[0]) - 1]
                self.questions[key] = fake.mention_bot(channel, person, f"bench {key}")
            else:
                channel = fake.dm_channel(person)
                self.questions[key] = fake.send_message(channel, person, f"bench {key}")
            self.where[key] = channel.id

    def progress(self) -> dict[str, Any]:
        return {"requests": len(self.discord.calls), "platform_429": len(self.discord.rate_limited)}

    def collect(self) -> dict[str, Any]:
        fake = self.discord
        by_reference: dict[int, Any] = {}
        for channel_id in set(self.where.values()):
            for message in fake.bot_messages(channel_id):
                if message.reference_id is not None:
                    by_reference[message.reference_id] = message
        frames: dict[int, int] = {}
        for call in fake.calls:
            if call.route in (SEND, EDIT) and call.status == 200 and call.message_id is not None:
                frames[call.message_id] = frames.get(call.message_id, 0) + 1
        replies: dict[str, Any] = {}
        for key in self.plan.keys():
            question = self.questions.get(key)
            parts = []
            cursor = by_reference.get(question.id) if question is not None else None
            while cursor is not None:  # the answer's chain: each part replies to the previous
                parts.append(cursor)
                cursor = by_reference.get(cursor.id)
            expected = "".join(discord_tokens(key, self.plan.tokens))
            texts = [p.text for p in parts]
            replies[key] = {
                "parts": len(parts),
                "identical": normalised("\n".join(texts)) == normalised(expected),
                "within_limit": all(utf16_len(t) <= 2000 for t in texts),
                "fences_balanced": all(len(_FENCE.findall(t)) % 2 == 0 for t in texts),
                "requests": sum(frames.get(p.id, 0) for p in parts),
                "edits": sum(max(frames.get(p.id, 0) - 1, 0) for p in parts),
            }
        errors: dict[str, int] = {}
        for call in fake.calls:
            if call.status >= 400 and call.status != 429:
                label = f"{call.route} {call.status} {call.error_code}"
                errors[label] = errors.get(label, 0) + 1
        return {
            "replies": replies,
            "platform_429": len(fake.rate_limited),
            "platform_errors": errors,
            "requests_total": len(fake.calls),
            "invalid_requests": fake.invalid_requests,
        }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_in_child(conn: Any, plan: DiscordPlan) -> None:
    """The fakes' process: run :class:`DiscordWorld`, answer ``inject``/``progress``/``collect``/``stop``."""
    asyncio.run(_child_main(conn, plan))


async def _child_main(conn: Any, plan: DiscordPlan) -> None:
    world = DiscordWorld(plan)
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
                conn.send({**world.collect(), "fakes_cpu_s": cpu_seconds() - cpu_start})
            elif command == "stop":
                break
    finally:
        await world.stop()
        conn.send("stopped")
