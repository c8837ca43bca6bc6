"""Slack's chat streaming for AI apps: ``chat.startStream`` / ``appendStream`` / ``stopStream``.

The state machine (as Slack behaves, partly undocumented — see platform-facts):

- ``startStream`` must be a reply in a thread (``thread_ts``); outside a DM it needs
  ``recipient_user_id`` and ``recipient_team_id`` (``missing_recipient_user_id`` /
  ``missing_recipient_team_id``). It creates a message in the ``streaming`` state.
- ``appendStream`` adds markdown (≤ 12,000 characters per call, else ``msg_too_long``) while
  streaming. After ``stopStream``, or once the stream outlived its server-side lifetime
  (about 5 minutes), it answers ``message_not_in_streaming_state``; after a user pressed stop,
  ``stopped_by_user``.
- ``chat.update`` on a message still streaming answers ``streaming_state_conflict`` (it works
  again once the stream stopped or expired: the SDK maintainers' advised fallback).
- A switch makes all three answer ``method_not_supported`` (older workspaces / plans).

Text arrives as ``markdown_text`` or as ``chunks`` (slack_sdk ≥ 3.38 sends
``[{"type": "markdown_text", "text": …}]``); other chunk types (plan/task updates) are accepted
and recorded but add no text.
"""

from __future__ import annotations

from typing import Any

from relaybot.core.testing.fake_slack.methods import (
    MAX_MARKDOWN,
    CallInfo,
    Handler,
    WebApi,
    validate_blocks,
)
from relaybot.core.testing.fake_slack.protocol import Params, SlackError, missing_argument
from relaybot.core.testing.fake_slack.store import SlackMessage, StreamState

_CHUNK_TYPES = frozenset({"markdown_text", "plan_update", "task_update", "blocks"})


class Streams:
    """The three streaming methods, on top of :class:`~.methods.WebApi`."""

    def __init__(self, api: WebApi) -> None:
        self.api = api
        #: when set, every streaming method answers this error (e.g. ``method_not_supported``)
        self.unavailable: str | None = None
        self.handlers: dict[str, Handler] = {
            "chat.startStream": self.start,
            "chat.appendStream": self.append,
            "chat.stopStream": self.stop,
        }

    def _check_available(self) -> None:
        if self.unavailable:
            raise SlackError(self.unavailable)

    async def start(self, params: Params, call: CallInfo) -> dict[str, Any]:
        self._check_available()
        api = self.api
        call.channel = params.get_str("channel")
        channel = api.writable_channel(call.channel)
        thread_ts = params.get_str("thread_ts")
        if not thread_ts:
            raise missing_argument("thread_ts")  # streamed messages are always thread replies
        parent = api.thread_parent(channel.id, thread_ts)
        user_id = params.get_str("recipient_user_id") or None
        team_id = params.get_str("recipient_team_id") or None
        if channel.kind != "im":
            if not user_id:
                raise SlackError("missing_recipient_user_id")
            if not team_id:
                raise SlackError("missing_recipient_team_id")
        if team_id and team_id != api.ws.team_id:
            raise SlackError("team_not_found")
        if user_id and user_id not in api.store.users:
            raise SlackError("user_not_found")
        text = _text(params, call)
        message = SlackMessage(channel.id, api.ids.ts(), api.ws.bot_user_id, True,
                               thread_ts=parent.ts, markdown=text)  # fmt: skip
        message.stream = StreamState(api.clock(), user_id, team_id, appends=[text] if text else [])
        api.store.add_message(message)
        message.history.append((api.clock(), "chat.startStream", message.visible))
        call.ts, call.text = message.ts, text
        call.extra["thread_ts"] = parent.ts
        return {"channel": channel.id, "ts": message.ts}

    def _streaming(self, params: Params, call: CallInfo) -> SlackMessage:
        api = self.api
        call.channel, call.ts = params.get_str("channel"), params.get_str("ts")
        channel = api.writable_channel(call.channel)
        if not call.ts:
            raise missing_argument("ts")
        message = api.store.messages.get((channel.id, call.ts))
        if message is None or message.deleted:
            raise SlackError("message_not_found")
        if not message.from_bot:
            raise SlackError("message_not_owned_by_app")
        state = api.stream_state(message)
        if state == "stopped_by_user":
            raise SlackError("stopped_by_user")
        if state != "streaming":
            raise SlackError("message_not_in_streaming_state")
        return message

    async def append(self, params: Params, call: CallInfo) -> dict[str, Any]:
        self._check_available()
        message = self._streaming(params, call)
        text = _text(params, call)
        if not text and "chunks" not in call.extra:
            raise missing_argument("markdown_text")
        self._add(message, text, "chat.appendStream")
        call.text = text
        return {"channel": message.channel, "ts": message.ts}

    async def stop(self, params: Params, call: CallInfo) -> dict[str, Any]:
        self._check_available()
        message = self._streaming(params, call)
        text = _text(params, call)
        blocks = params.get_json("blocks", error="invalid_blocks_format")
        if blocks is not None:
            validate_blocks(blocks)
            message.blocks = blocks
        assert message.stream is not None
        message.stream.state = "stopped"
        self._add(message, text, "chat.stopStream")
        call.text = text
        return {"channel": message.channel, "ts": message.ts,
                "message": self.api.message_api(message)}  # fmt: skip

    def _add(self, message: SlackMessage, text: str, method: str) -> None:
        assert message.stream is not None
        if text:
            message.stream.appends.append(text)
            message.markdown = (message.markdown or "") + text
        message.history.append((self.api.clock(), method, message.visible))

    # -- test side -------------------------------------------------------------------------

    def stop_by_user(self, message: SlackMessage) -> None:
        """A person pressed "stop" on a streaming message: later calls get ``stopped_by_user``."""
        if message.stream is None:
            raise ValueError(f"message {message.ts} is not a streamed message")
        message.stream.state = "stopped_by_user"
        message.history.append((self.api.clock(), "stopped_by_user", message.visible))


def _text(params: Params, call: CallInfo) -> str:
    """The markdown a streaming call adds: ``markdown_text`` plus markdown chunks."""
    text = params.get_str("markdown_text") or ""
    chunks = params.get_json("chunks", error="invalid_chunks")
    if chunks is not None:
        if not isinstance(chunks, list):
            raise SlackError("invalid_chunks")
        kinds = []
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in _CHUNK_TYPES:
                raise SlackError("invalid_chunks")
            kinds.append(chunk["type"])
            if chunk["type"] == "markdown_text":
                if not isinstance(chunk.get("text"), str):
                    raise SlackError("invalid_chunks")
                text += chunk["text"]
        call.extra["chunks"] = kinds
    if len(text) > MAX_MARKDOWN:
        raise SlackError("msg_too_long")
    return text
