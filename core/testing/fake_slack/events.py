"""Build the payloads Slack sends an app: Events API callbacks, slash commands, interactions.

Shapes follow Slack's event reference (and the payloads in slack_bolt's own tests): an
``event_callback`` wraps the ``event`` with ``team_id``, ``api_app_id``, ``event_id``,
``event_time`` and ``authorizations``; user messages carry ``client_msg_id`` and a
``rich_text`` block; edits and deletions are ``message`` events with the ``message_changed``
/ ``message_deleted`` subtypes; a slash command is a flat dict of strings (form fields over
HTTP). The builders only build: :class:`~.server.FakeSlackServer` stores and delivers them.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from relaybot.core.testing.fake_slack.methods import Workspace
from relaybot.core.testing.fake_slack.store import SlackMessage

_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def channel_type(kind: str) -> str:
    """The ``channel_type`` of message events for a conversation kind."""
    return {"im": "im", "mpim": "mpim", "group": "group"}.get(kind, "channel")


def rich_text_blocks(text: str) -> list[dict[str, Any]]:
    """The ``rich_text`` block Slack clients attach to a typed message (mentions as elements)."""
    elements: list[dict[str, Any]] = []
    pos = 0
    for match in _MENTION.finditer(text):
        if match.start() > pos:
            elements.append({"type": "text", "text": text[pos:match.start()]})
        elements.append({"type": "user", "user_id": match.group(1)})
        pos = match.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5],
             "elements": [{"type": "rich_text_section", "elements": elements}]}]  # fmt: skip


def event_callback(ws: Workspace, event: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The Events API envelope (the HTTP body; the Socket Mode ``payload``)."""
    return {
        "token": "fake-verification-token", "team_id": ws.team_id, "context_team_id": ws.team_id,
        "context_enterprise_id": None, "api_app_id": ws.app_id, "event": event,
        "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": ws.team_id, "user_id": ws.bot_user_id,
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": f"4-{uuid.uuid4().hex}",
    }  # fmt: skip


def user_message_event(
    ws: Workspace, message: SlackMessage, kind: str, *, parent_user: str | None = None,
    assistant_thread: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A ``message`` event for a person's message (a thread reply when it has ``thread_ts``).

    Messages in an assistant thread carry ``assistant_thread.action_token``, as on Slack.
    """
    event: dict[str, Any] = {
        "user": message.user, "type": "message", "ts": message.ts, "text": message.text,
        "team": ws.team_id, "user_team": ws.team_id, "source_team": ws.team_id,
        "suppress_notification": False, "channel": message.channel, "event_ts": message.ts,
        "channel_type": channel_type(kind),
    }  # fmt: skip
    if assistant_thread:
        event["assistant_thread"] = {"action_token": f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:8]}"}
    if message.subtype != "file_share":
        event["client_msg_id"] = str(uuid.uuid4())
        event["blocks"] = rich_text_blocks(message.text)
    if message.subtype:
        event["subtype"] = message.subtype
    if message.files:
        event.update({"files": message.files, "upload": False, "display_as_bot": False})
    if message.thread_ts and message.thread_ts != message.ts:
        event["thread_ts"] = message.thread_ts
        if parent_user:
            event["parent_user_id"] = parent_user
    return event


def app_mention_event(ws: Workspace, message: SlackMessage) -> dict[str, Any]:
    """An ``app_mention`` for a channel message that mentions the bot."""
    event: dict[str, Any] = {
        "client_msg_id": str(uuid.uuid4()), "type": "app_mention", "text": message.text,
        "user": message.user, "ts": message.ts, "blocks": rich_text_blocks(message.text),
        "team": ws.team_id, "channel": message.channel, "event_ts": message.ts,
    }  # fmt: skip
    if message.thread_ts and message.thread_ts != message.ts:
        event["thread_ts"] = message.thread_ts
    if message.files:
        event["files"] = message.files
    return event


def bot_message_event(ws: Workspace, message: SlackMessage, kind: str) -> dict[str, Any]:
    """The event Slack sends for a message the app itself posted (apps must ignore it)."""
    event: dict[str, Any] = {
        "user": ws.bot_user_id, "type": "message", "ts": message.ts, "bot_id": ws.bot_id,
        "app_id": ws.app_id, "text": message.text or message.visible, "team": ws.team_id,
        "bot_profile": {"id": ws.bot_id, "deleted": False, "name": ws.bot_name,
                        "app_id": ws.app_id, "team_id": ws.team_id},
        "channel": message.channel, "event_ts": message.ts, "channel_type": channel_type(kind),
    }  # fmt: skip
    if message.blocks:
        event["blocks"] = message.blocks
    if message.thread_ts:
        event["thread_ts"] = message.thread_ts
        event["parent_user_id"] = ws.bot_user_id
    return event


def message_object(ws: Workspace, message: SlackMessage, kind: str) -> dict[str, Any]:
    """The message as nested in edit/delete events (no ``channel``/``event_ts``/``channel_type``)."""
    event = user_message_event(ws, message, kind)
    for key in ("channel", "event_ts", "channel_type"):
        event.pop(key, None)
    return event


def message_changed_event(
    ws: Workspace, channel: str, before: dict[str, Any], after: dict[str, Any], kind: str, now_ts: str
) -> dict[str, Any]:
    """``message`` / ``message_changed``: an edit (``hidden``, no ``user`` at the top level)."""
    return {"type": "message", "subtype": "message_changed", "message": after,
            "previous_message": before, "channel": channel, "hidden": True,
            "ts": now_ts, "event_ts": now_ts, "channel_type": channel_type(kind)}  # fmt: skip


def message_deleted_event(
    ws: Workspace, before: dict[str, Any], channel: str, kind: str, now_ts: str
) -> dict[str, Any]:
    """``message`` / ``message_deleted``."""
    return {"type": "message", "subtype": "message_deleted", "hidden": True,
            "deleted_ts": before["ts"], "channel": channel, "previous_message": before,
            "ts": now_ts, "event_ts": now_ts, "channel_type": channel_type(kind)}  # fmt: skip


def assistant_thread_started_event(
    ws: Workspace, user: str, channel: str, thread_ts: str, context_channel: str | None
) -> dict[str, Any]:
    """``assistant_thread_started``: someone opened the app's assistant pane (a DM thread)."""
    context: dict[str, Any] = {"enterprise_id": None}
    if context_channel:
        context.update({"channel_id": context_channel, "team_id": ws.team_id})
    return {"type": "assistant_thread_started",
            "assistant_thread": {"user_id": user, "context": context, "channel_id": channel,
                                 "thread_ts": thread_ts},
            "event_ts": thread_ts}  # fmt: skip


def slash_command_payload(
    ws: Workspace, *, command: str, text: str, user: str, user_name: str, channel: str,
    channel_name: str, response_url: str,
) -> dict[str, str]:  # fmt: skip
    """A slash command as Slack sends it (all values strings)."""
    return {
        "token": "fake-verification-token", "team_id": ws.team_id, "team_domain": ws.team_domain,
        "channel_id": channel, "channel_name": channel_name, "user_id": user,
        "user_name": user_name, "command": command, "text": text, "api_app_id": ws.app_id,
        "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:32]}",
    }  # fmt: skip


def block_actions_payload(
    ws: Workspace, *, user: str, user_name: str, channel: str, message: dict[str, Any],
    action_id: str, value: str, response_url: str,
) -> dict[str, Any]:  # fmt: skip
    """``block_actions``: a person pressed a button in one of the bot's messages."""
    return {
        "type": "block_actions", "user": {"id": user, "username": user_name, "team_id": ws.team_id},
        "api_app_id": ws.app_id, "token": "fake-verification-token",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().hex[:24]}",
        "team": {"id": ws.team_id, "domain": ws.team_domain}, "channel": {"id": channel},
        "message": message, "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "actions",
                     "value": value, "action_ts": f"{time.time():.6f}",
                     "text": {"type": "plain_text", "text": value}}],
    }  # fmt: skip
