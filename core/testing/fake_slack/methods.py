"""The Web API methods of messages, conversations, users and assistant threads.

Each handler takes the call's :class:`~.protocol.Params` and a :class:`CallInfo` it fills in
for the timeline, and returns the ``ok`` body (without ``ok``) or raises
:class:`~.protocol.SlackError` with Slack's error code. Streaming lives in :mod:`.streams`,
files v2 in :mod:`.files`; both reuse the channel checks here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from relaybot.core.testing.fake_slack.protocol import Params, SlackError, invalid_arguments
from relaybot.core.testing.fake_slack.store import Channel, Ids, SlackMessage, Store, User

#: Slack truncates ``text`` beyond this many characters
MAX_TEXT = 40_000
#: a ``markdown`` block, ``markdown_text`` and each streaming call: at most this many characters
MAX_MARKDOWN = 12_000
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
MAX_BLOCKS = 50
MAX_LOADING_MESSAGES = 10
MAX_SUGGESTED_PROMPTS = 4


@dataclass(slots=True)
class CallInfo:
    """What the timeline records about one call (filled in by the handler as it learns it)."""

    channel: str | None = None
    ts: str | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Params, CallInfo], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class Workspace:
    """Who the app is in the one workspace the fake models."""

    team_id: str = "T0FAKETEAM"
    team_name: str = "Fake Team"
    team_domain: str = "fake-team"
    bot_user_id: str = "U0FAKEBOT"
    bot_id: str = "B0FAKEBOT"
    app_id: str = "A0FAKEAPP"
    bot_name: str = "relaybot"


class WebApi:
    """Message, conversation, user and assistant methods over one :class:`Store`."""

    def __init__(self, store: Store, ids: Ids, workspace: Workspace, clock: Callable[[], float]) -> None:
        self.store = store
        self.ids = ids
        self.ws = workspace
        self.clock = clock
        self.handlers: dict[str, Handler] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "chat.delete": self.delete,
            "chat.postEphemeral": self.post_ephemeral,
            "conversations.replies": self.replies,
            "conversations.info": self.conversation_info,
            "users.info": self.users_info,
            "assistant.threads.setStatus": self.set_status,
            "assistant.threads.setSuggestedPrompts": self.set_suggested_prompts,
            "assistant.threads.setTitle": self.set_title,
        }

    # -- shared checks ---------------------------------------------------------------------

    def writable_channel(self, channel_id: str | None) -> Channel:
        """The channel the bot may post in, or Slack's error for why not."""
        channel = self.store.channels.get(channel_id or "")
        if channel is None:
            raise SlackError("channel_not_found")
        if not channel.is_member:
            # a private conversation the bot is not in is invisible to it
            raise SlackError("not_in_channel" if channel.kind == "channel" else "channel_not_found")
        if channel.is_archived:
            raise SlackError("is_archived")
        return channel

    def readable_channel(self, channel_id: str | None) -> Channel:
        """A channel the bot may read (archived ones too)."""
        channel = self.store.channels.get(channel_id or "")
        if channel is None or (not channel.is_member and channel.kind != "channel"):
            raise SlackError("channel_not_found")
        if not channel.is_member:
            raise SlackError("not_in_channel")
        return channel

    def bot_message(self, channel: str, ts: str | None, *, action: str) -> SlackMessage:
        """A live message of the bot's (``action`` is ``update``/``delete`` for the error)."""
        message = self.store.messages.get((channel, ts or ""))
        if message is None or message.deleted:
            raise SlackError("message_not_found")
        if not message.from_bot:
            raise SlackError(f"cant_{action}_message")
        return message

    def thread_parent(self, channel: str, thread_ts: str) -> SlackMessage:
        """The message a reply goes under (``thread_not_found`` when there is none)."""
        parent = self.store.messages.get((channel, thread_ts))
        if parent is None or parent.deleted:
            raise SlackError("thread_not_found")
        if parent.thread_ts and parent.thread_ts != parent.ts:
            # Slack: "avoid using a reply's ts value; use its parent's value instead"
            return self.store.messages.get((channel, parent.thread_ts), parent)
        return parent

    def content(self, params: Params) -> tuple[str, list[dict[str, Any]] | None, str | None]:
        """``(text, blocks, markdown_text)`` of a post/update, validated like Slack does."""
        text = params.get_str("text") or ""
        blocks = params.get_json("blocks", error="invalid_blocks_format")
        markdown = params.get_str("markdown_text")
        if markdown is not None and (text or blocks):
            raise SlackError("markdown_text_conflict")
        if markdown is not None and len(markdown) > MAX_MARKDOWN:
            raise SlackError("msg_too_long")
        if blocks is not None:
            validate_blocks(blocks)
        if not text and not blocks and not markdown:
            raise SlackError("no_text")
        return text[:MAX_TEXT], blocks, markdown

    def new_message(
        self, channel: str, *, text: str = "", blocks: list[dict[str, Any]] | None = None,
        markdown: str | None = None, thread_ts: str | None = None, method: str,
    ) -> SlackMessage:  # fmt: skip
        """Store a new bot message and start its history."""
        message = SlackMessage(channel, self.ids.ts(), self.ws.bot_user_id, True, text=text,
                               thread_ts=thread_ts, blocks=blocks, markdown=markdown)  # fmt: skip
        self.store.add_message(message)
        message.history.append((self.clock(), method, message.visible))
        return message

    def message_api(self, message: SlackMessage) -> dict[str, Any]:
        """A message object as the Web API returns it."""
        return message.to_api(self.ws.bot_id, self.ws.team_id)

    # -- methods ---------------------------------------------------------------------------

    async def auth_test(self, params: Params, call: CallInfo) -> dict[str, Any]:
        ws = self.ws
        return {"url": f"https://{ws.team_domain}.slack.com/", "team": ws.team_name,
                "user": ws.bot_name, "team_id": ws.team_id, "user_id": ws.bot_user_id,
                "bot_id": ws.bot_id, "is_enterprise_install": False}  # fmt: skip

    async def post_message(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel = params.get_str("channel")
        channel = self.writable_channel(call.channel)
        text, blocks, markdown = self.content(params)
        thread_ts = params.get_str("thread_ts") or None
        if thread_ts:
            thread_ts = self.thread_parent(channel.id, thread_ts).ts
        message = self.new_message(channel.id, text=text, blocks=blocks, markdown=markdown,
                                   thread_ts=thread_ts, method="chat.postMessage")  # fmt: skip
        call.ts, call.text = message.ts, message.visible
        if thread_ts:
            call.extra["thread_ts"] = thread_ts
        return {"channel": channel.id, "ts": message.ts, "message": self.message_api(message)}

    async def update(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel, call.ts = params.get_str("channel"), params.get_str("ts")
        channel = self.writable_channel(call.channel)
        message = self.bot_message(channel.id, call.ts, action="update")
        stream = message.stream
        if stream is not None and self.stream_state(message) == "streaming":
            raise SlackError("streaming_state_conflict")
        text, blocks, markdown = self.content(params)
        message.text, message.blocks, message.markdown = text, blocks, markdown
        message.edit_count += 1
        message.history.append((self.clock(), "chat.update", message.visible))
        call.text = message.visible
        return {"channel": channel.id, "ts": message.ts, "text": text,
                "message": self.message_api(message)}  # fmt: skip

    async def delete(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel, call.ts = params.get_str("channel"), params.get_str("ts")
        channel = self.writable_channel(call.channel)
        message = self.bot_message(channel.id, call.ts, action="delete")
        message.deleted = True
        message.history.append((self.clock(), "chat.delete", ""))
        return {"channel": channel.id, "ts": message.ts}

    async def post_ephemeral(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel = params.get_str("channel")
        channel = self.writable_channel(call.channel)
        user = params.get_str("user")
        if not user or user not in self.store.users:
            raise SlackError("user_not_found")
        if channel.kind == "im" and channel.user != user:
            raise SlackError("user_not_in_channel")
        text, blocks, markdown = self.content(params)
        ts = self.ids.ts()
        call.text = text or markdown or ""
        call.extra["user"] = user
        self.store.ephemeral.append({"channel": channel.id, "user": user, "text": text,
                                     "blocks": blocks, "markdown_text": markdown,
                                     "thread_ts": params.get_str("thread_ts"), "ts": ts})  # fmt: skip
        return {"message_ts": ts}

    async def replies(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel = params.get_str("channel")
        channel = self.readable_channel(call.channel)
        ts = params.get_str("ts")
        if not ts:
            raise invalid_arguments("[ERROR] missing required field: ts")
        parent = self.store.messages.get((channel.id, ts))
        if parent is None or parent.deleted:
            raise SlackError("thread_not_found")
        root = parent.thread_ts or parent.ts
        thread = self.store.thread(channel.id, root)
        limit = params.get_int("limit", 1000) or 1000
        return {"messages": [self.message_api(m) for m in thread[:limit]],
                "has_more": len(thread) > limit, "response_metadata": {"next_cursor": ""}}  # fmt: skip

    async def conversation_info(self, params: Params, call: CallInfo) -> dict[str, Any]:
        call.channel = params.get_str("channel")
        channel = self.store.channels.get(call.channel or "")
        if channel is None or (not channel.is_member and channel.kind != "channel"):
            raise SlackError("channel_not_found")
        return {"channel": channel.to_api(self.ws.team_id)}

    async def users_info(self, params: Params, call: CallInfo) -> dict[str, Any]:
        user = self.store.users.get(params.get_str("user") or "")
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user.to_api()}

    def _assistant_thread(self, params: Params, call: CallInfo) -> tuple[Channel, str]:
        call.channel = params.get_str("channel_id")
        channel = self.writable_channel(call.channel)
        thread_ts = params.get_str("thread_ts")
        if not thread_ts:
            raise invalid_arguments("[ERROR] missing required field: thread_ts")
        call.ts = thread_ts
        return channel, thread_ts

    def _note(self, method: str, channel: Channel, thread_ts: str, **values: Any) -> None:
        self.store.assistant.append({"t": self.clock(), "method": method, "channel": channel.id,
                                     "thread_ts": thread_ts, **values})  # fmt: skip

    async def set_status(self, params: Params, call: CallInfo) -> dict[str, Any]:
        channel, thread_ts = self._assistant_thread(params, call)
        status = params.get_str("status")
        if status is None:
            raise invalid_arguments("[ERROR] missing required field: status")
        loading = params.get_json("loading_messages")
        if loading is not None and (not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES):
            raise invalid_arguments(f"[ERROR] loading_messages: at most {MAX_LOADING_MESSAGES} items")
        call.text = status
        self._note("setStatus", channel, thread_ts, status=status, loading_messages=loading)
        return {}

    async def set_suggested_prompts(self, params: Params, call: CallInfo) -> dict[str, Any]:
        channel, thread_ts = self._assistant_thread(params, call)
        prompts = params.get_json("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise invalid_arguments("[ERROR] missing required field: prompts")
        if len(prompts) > MAX_SUGGESTED_PROMPTS:
            raise invalid_arguments(f"[ERROR] prompts: at most {MAX_SUGGESTED_PROMPTS} items")
        if not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise invalid_arguments("[ERROR] prompts: each needs a title and a message")
        self._note("setSuggestedPrompts", channel, thread_ts, prompts=prompts,
                   title=params.get_str("title"))  # fmt: skip
        return {}

    async def set_title(self, params: Params, call: CallInfo) -> dict[str, Any]:
        channel, thread_ts = self._assistant_thread(params, call)
        title = params.get_str("title")
        if not title:
            raise invalid_arguments("[ERROR] missing required field: title")
        call.text = title
        self._note("setTitle", channel, thread_ts, title=title)
        return {}

    # -- used by streams -------------------------------------------------------------------

    stream_lifetime: float = 300.0

    def stream_state(self, message: SlackMessage) -> str | None:
        """The message's stream state now (expiring it lazily after :attr:`stream_lifetime`)."""
        stream = message.stream
        if stream is None:
            return None
        if stream.state == "streaming" and self.clock() - stream.started_at >= self.stream_lifetime:
            stream.state = "expired"
        return stream.state

    def ensure_user(self, user_id: str) -> User:
        """The user ``user_id``, created on first use with a name derived from the id."""
        user = self.store.users.get(user_id)
        if user is None:
            user = User(user_id, f"user_{user_id.lower()}", self.ws.team_id)
            self.store.users[user_id] = user
        return user


def validate_blocks(blocks: Any) -> None:
    """Raise ``invalid_blocks`` for what Slack rejects: too many, unknown shape, too long."""
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        raise SlackError("invalid_blocks")
    markdown_total = 0
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise SlackError("invalid_blocks")
        kind = block["type"]
        if kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text:
                raise SlackError("invalid_blocks")
            markdown_total += len(text)  # the 12,000 limit is cumulative per message
        elif kind in ("section", "header"):
            text = block.get("text")
            limit = MAX_SECTION_TEXT if kind == "section" else MAX_HEADER_TEXT
            if text is not None and (not isinstance(text, dict) or len(str(text.get("text", ""))) > limit):
                raise SlackError("invalid_blocks")
            if text is None and kind == "header":
                raise SlackError("invalid_blocks")
    if markdown_total > MAX_MARKDOWN:
        raise SlackError("invalid_blocks")
