"""Which Slack events relaybot answers, and where: event payload → :class:`RoutedMessage`.

The rules (issue 13, "Where it answers"):

- **DMs**: every person's message in the bot's DM is answered. A top-level DM message starts a
  conversation; the reply goes into *its* thread, and each DM thread is its own conversation.
- **Mentions in channels**: ``app_mention`` is answered in the thread of the mention (a
  mention inside a thread answers in that thread); the thread is the conversation.
- **Follow-ups**: a reply in a channel thread the bot is already part of is answered without
  a new mention, unless ``thread_follow_ups`` is off. Whether the bot is in a thread is the
  connector's knowledge (it answered there before), given as ``bot_in_thread``.
- **Assistant threads**: ``assistant_thread_started`` becomes :class:`AssistantThreadStarted`
  (greeting, suggested prompts); messages in them are DM thread messages.
- Never: the bot's own messages (nor other bots', unless ``answer_bots``), edits
  (``message_changed``), deletions (``message_deleted``) and every other subtype that is not a
  person writing (joins, topic changes, ``assistant_app_thread`` roots …), and the ``message``
  twin Slack sends for a channel message that mentions the bot (``app_mention`` answers it:
  answering both would reply twice).

Slack re-delivers events it did not see acknowledged; the dedupe key is the envelope's
``event_id`` (:attr:`RoutedMessage.event_id`), the same on every re-delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: message subtypes that are a person writing (everything else is ignored)
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_MENTION = r"<@{}(?:\|[^>]*)?>"
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True, slots=True)
class SlackFile:
    """A file attached to a message (``url`` needs the bot token to download)."""

    id: str
    name: str
    mimetype: str
    size: int | None
    url: str

    @property
    def is_image(self) -> bool:
        """True for ``image/*`` files."""
        return self.mimetype.startswith("image/")


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """A message relaybot answers.

    ``thread_ts`` is the thread the reply goes into, and with ``team``/``channel`` it names
    the conversation (:attr:`thread_key`). ``text`` has the bot's mention removed. ``kind``
    says why it is answered.
    """

    event_id: str
    team: str
    channel: str
    user: str
    text: str
    ts: str
    thread_ts: str
    is_dm: bool
    kind: Literal["dm", "mention", "follow_up"]
    files: tuple[SlackFile, ...] = ()
    #: the message is in the app's assistant pane (set status/title there)
    assistant_thread: bool = False

    @property
    def chat_key(self) -> str:
        """``team:channel`` — the Slack conversation."""
        return f"{self.team}:{self.channel}"

    @property
    def thread_key(self) -> str:
        """``team:channel:thread_ts`` — the relaybot conversation (one per thread)."""
        return f"{self.team}:{self.channel}:{self.thread_ts}"

    @property
    def images(self) -> tuple[SlackFile, ...]:
        """The attached images."""
        return tuple(f for f in self.files if f.is_image)


@dataclass(frozen=True, slots=True)
class AssistantThreadStarted:
    """Someone opened the app's assistant pane: greet, offer prompts, later set the title."""

    event_id: str
    team: str
    user: str
    channel: str
    thread_ts: str
    context_channel: str | None

    @property
    def thread_key(self) -> str:
        """The conversation this thread will be."""
        return f"{self.team}:{self.channel}:{self.thread_ts}"


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event relaybot does not answer, and why (for debug logs and tests)."""

    event_id: str
    reason: str


Routed = RoutedMessage | AssistantThreadStarted | Ignored


class Router:
    """Apply the rules above for one bot (its user id and bot id from ``auth.test``).

    Args:
        bot_user_id: the bot's user id (``U…``): mentions of it are the trigger and removed.
        bot_id: the bot's ``B…`` id, to recognise its own messages (also matched by user id).
        thread_follow_ups: answer follow-ups in channel threads the bot is in, unmentioned.
        bot_in_thread: ``(team, channel, thread_ts) -> bool``: has the bot taken part in that
            thread? (The connector keeps this; default: only threads the bot started.)
        answer_bots: also answer other apps' messages (off: bots talking to bots loop).
    """

    def __init__(
        self,
        bot_user_id: str,
        bot_id: str | None = None,
        *,
        thread_follow_ups: bool = True,
        bot_in_thread: Callable[[str, str, str], bool] | None = None,
        answer_bots: bool = False,
    ) -> None:
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.thread_follow_ups = thread_follow_ups
        self.bot_in_thread = bot_in_thread or (lambda team, channel, thread_ts: False)
        self.answer_bots = answer_bots
        self._mention = re.compile(_MENTION.format(re.escape(bot_user_id)))

    def route(self, body: Mapping[str, Any]) -> Routed:
        """Route one Events API body (``{"type": "event_callback", "event": …}``)."""
        event_id = str(body.get("event_id") or "")
        if body.get("type") != "event_callback" or not isinstance(body.get("event"), Mapping):
            return Ignored(event_id, f"not an event callback ({body.get('type')!r})")
        event: Mapping[str, Any] = body["event"]
        team = str(event.get("team") or body.get("team_id") or "")
        kind = event.get("type")
        if kind == "assistant_thread_started":
            thread = event.get("assistant_thread") or {}
            context = thread.get("context") or {}
            return AssistantThreadStarted(event_id, team or str(body.get("team_id", "")),
                                          str(thread.get("user_id", "")), str(thread.get("channel_id", "")),
                                          str(thread.get("thread_ts", "")),
                                          context.get("channel_id") or None)  # fmt: skip
        if kind not in ("app_mention", "message"):
            return Ignored(event_id, f"event type {kind!r}")
        subtype = event.get("subtype")
        if subtype not in USER_SUBTYPES:
            return Ignored(event_id, f"subtype {subtype!r}")
        if event.get("hidden"):
            return Ignored(event_id, "hidden message")
        if self._from_a_bot(event):
            return Ignored(event_id, "a bot's message")
        user = str(event.get("user") or "")
        channel = str(event.get("channel") or "")
        ts = str(event.get("ts") or "")
        if not (user and channel and ts):
            return Ignored(event_id, "no user, channel or ts")
        raw_text = str(event.get("text") or "")
        thread_ts = str(event.get("thread_ts") or "") or None
        in_thread = thread_ts is not None and thread_ts != ts
        files = _files(event.get("files"))
        text = self.strip_mention(raw_text)
        # a top-level message starts a thread under itself; a reply stays in its thread
        reply_thread = thread_ts if in_thread and thread_ts else ts

        def routed(route_kind: Literal["dm", "mention", "follow_up"], is_dm: bool) -> RoutedMessage:
            return RoutedMessage(
                event_id, team, channel, user, text, ts, reply_thread, is_dm, route_kind, files,
                assistant_thread="assistant_thread" in event,
            )

        if kind == "app_mention":
            if channel.startswith("D"):
                return Ignored(event_id, "mention in a DM (the message event answers it)")
            return routed("mention", False)
        if event.get("channel_type") == "im" or channel.startswith("D"):
            if not text and not files:
                return Ignored(event_id, "empty message")
            return routed("dm", True)
        if self._mention.search(raw_text):
            return Ignored(event_id, "mentions the bot (app_mention answers it)")
        if not in_thread or thread_ts is None:
            return Ignored(event_id, "channel message without a mention")
        if not self.thread_follow_ups:
            return Ignored(event_id, "thread follow-ups are off")
        parent_is_bot = event.get("parent_user_id") == self.bot_user_id
        if not (parent_is_bot or self.bot_in_thread(team, channel, thread_ts)):
            return Ignored(event_id, "a thread the bot is not in")
        return routed("follow_up", False)

    def strip_mention(self, text: str) -> str:
        """``text`` without the bot's ``<@U…>`` mentions (spacing tidied)."""
        cleaned = self._mention.sub("", text)
        return _SPACES.sub(" ", cleaned).strip()

    def _from_a_bot(self, event: Mapping[str, Any]) -> bool:
        if event.get("user") == self.bot_user_id:
            return True
        bot_id = event.get("bot_id")
        if bot_id and (bot_id == self.bot_id or not self.answer_bots):
            return True
        return event.get("subtype") == "bot_message" and not self.answer_bots


def _files(raw: Any) -> tuple[SlackFile, ...]:
    if not isinstance(raw, list):
        return ()
    files = []
    for item in raw:
        if not isinstance(item, Mapping) or item.get("mode") in ("tombstone", "hidden_by_limit"):
            continue  # deleted, or beyond a free workspace's history: nothing to fetch
        url = item.get("url_private_download") or item.get("url_private")
        if not item.get("id") or not url:
            continue
        size = item.get("size")
        files.append(SlackFile(str(item["id"]), str(item.get("name") or item["id"]),
                               str(item.get("mimetype") or "application/octet-stream"),
                               size if isinstance(size, int) else None, str(url)))  # fmt: skip
    return tuple(files)


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A slash command (``/relaybot new``): ``text`` is what follows the command."""

    team: str
    channel: str
    user: str
    command: str
    text: str
    response_url: str
    trigger_id: str

    @property
    def is_dm(self) -> bool:
        """True when run in a DM with the bot."""
        return self.channel.startswith("D")


def route_command(payload: Mapping[str, Any]) -> SlashCommand:
    """A slash command payload (Socket Mode ``payload`` or the HTTP form) as a record."""
    return SlashCommand(
        str(payload.get("team_id", "")), str(payload.get("channel_id", "")),
        str(payload.get("user_id", "")), str(payload.get("command", "")),
        str(payload.get("text", "")).strip(), str(payload.get("response_url", "")),
        str(payload.get("trigger_id", "")),
    )  # fmt: skip
