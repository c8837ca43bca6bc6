"""The test side of :class:`~.server.FakeSlackServer`: people doing things in Slack.

Each helper stores what happened (the message, the file) so the Web API sees it too
(``conversations.replies``, downloads), builds the payload Slack would send and hands it to
delivery; it returns the :class:`~.delivery.Delivery` to await (``server.wait_acked``).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from relaybot.core.testing.fake_slack import events
from relaybot.core.testing.fake_slack.delivery import Delivery
from relaybot.core.testing.fake_slack.store import SlackMessage, StoredFile

if TYPE_CHECKING:
    from relaybot.core.testing.fake_slack.delivery import EventDelivery
    from relaybot.core.testing.fake_slack.methods import WebApi, Workspace
    from relaybot.core.testing.fake_slack.store import Channel, Ids, Store, User


class Injector:
    """Mixin: helpers that inject events (needs the server's store, api and delivery)."""

    store: Store
    ids: Ids
    api: WebApi
    workspace: Workspace
    delivery: EventDelivery
    bot_user: User

    if TYPE_CHECKING:

        @property
        def url(self) -> str: ...

        def dm_channel(self, user_id: str) -> str: ...

    # -- raw -------------------------------------------------------------------------------

    def inject_event(self, event: dict[str, Any], *, event_id: str | None = None) -> Delivery:
        """Deliver a raw ``event`` wrapped in an ``event_callback`` (a fresh ``Ev…`` id)."""
        payload = events.event_callback(self.workspace, event, event_id or self.ids.new("Ev"))
        return self.delivery.submit("events_api", payload)

    def _channel(self, channel_id: str) -> Channel:
        channel = self.store.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"no channel {channel_id!r}: add it with add_channel() first")
        return channel

    def _user_message(
        self, channel_id: str, user: str, text: str, *, thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None, subtype: str | None = None,
    ) -> SlackMessage:  # fmt: skip
        self.api.ensure_user(user)
        self._channel(channel_id)
        message = SlackMessage(channel_id, self.ids.ts(), user, False, text=text, thread_ts=thread_ts,
                               files=files or [], subtype=subtype)  # fmt: skip
        self.store.add_message(message)
        return message

    def _parent_user(self, channel: str, thread_ts: str | None) -> str | None:
        parent = self.store.messages.get((channel, thread_ts or ""))
        return parent.user if parent else None

    # -- messages --------------------------------------------------------------------------

    def dm(self, user: str, text: str, *, thread_ts: str | None = None) -> Delivery:
        """``user`` writes ``text`` to the bot in their DM (``thread_ts``: inside a DM thread,
        e.g. an assistant thread from :meth:`start_assistant_thread`)."""
        channel = self.dm_channel(user)
        message = self._user_message(channel, user, text, thread_ts=thread_ts)
        root = self.store.messages.get((channel, thread_ts or ""))
        event = events.user_message_event(
            self.workspace, message, "im", parent_user=root.user if root else None,
            assistant_thread=root is not None and root.subtype == "assistant_app_thread",
        )  # fmt: skip
        return self.inject_event(event)

    def mention(self, channel: str, user: str, text: str, *, thread_ts: str | None = None,
                with_message_event: bool = False) -> Delivery:  # fmt: skip
        """``user`` mentions the bot in ``channel`` (``<@BOT>`` is prepended when missing).

        Slack sends ``app_mention``; an app also subscribed to ``message.channels`` gets a
        second, ``message`` event for the same message (``with_message_event``), with another
        event id: apps must answer only one of them. Returns the ``app_mention`` delivery.
        """
        mention = f"<@{self.workspace.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        message = self._user_message(channel, user, text, thread_ts=thread_ts)
        delivery = self.inject_event(events.app_mention_event(self.workspace, message))
        if with_message_event:
            kind = self._channel(channel).kind
            parent_user = self._parent_user(channel, thread_ts)
            event = events.user_message_event(self.workspace, message, kind, parent_user=parent_user)
            self.inject_event(event)
        return delivery

    def channel_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> Delivery:
        """A plain message in a channel (a thread follow-up when ``thread_ts`` is given)."""
        message = self._user_message(channel, user, text, thread_ts=thread_ts)
        event = events.user_message_event(self.workspace, message, self._channel(channel).kind,
                                          parent_user=self._parent_user(channel, thread_ts))  # fmt: skip
        return self.inject_event(event)

    def thread_reply(self, channel: str, user: str, text: str, thread_ts: str) -> Delivery:
        """A follow-up in a thread, without mentioning the bot (DM or channel)."""
        return self.channel_message(channel, user, text, thread_ts=thread_ts)

    def edit(self, channel: str, ts: str, new_text: str) -> Delivery:
        """The author edits a message: ``message_changed`` (old and new message nested)."""
        message = self.store.messages[(channel, ts)]
        kind = self._channel(channel).kind
        before = events.message_object(self.workspace, message, kind)
        message.text = new_text
        message.edit_count += 1
        after = {**events.message_object(self.workspace, message, kind),
                 "client_msg_id": before.get("client_msg_id"),
                 "edited": {"user": message.user, "ts": self.ids.ts()}}  # fmt: skip
        return self.inject_event(events.message_changed_event(self.workspace, channel, before, after, kind,
                                                              self.ids.ts()))  # fmt: skip

    def delete(self, channel: str, ts: str) -> Delivery:
        """The author deletes a message: ``message_deleted``."""
        message = self.store.messages[(channel, ts)]
        kind = self._channel(channel).kind
        before = events.message_object(self.workspace, message, kind)
        message.deleted = True
        return self.inject_event(events.message_deleted_event(self.workspace, before, channel, kind,
                                                              self.ids.ts()))  # fmt: skip

    def echo_bot_message(self, message: SlackMessage) -> Delivery:
        """Deliver the event Slack sends for one of the bot's own messages."""
        kind = self._channel(message.channel).kind
        return self.inject_event(events.bot_message_event(self.workspace, message, kind))

    def share_file(
        self, channel: str, user: str, data: bytes, *, filename: str = "image.png",
        mimetype: str = "image/png", text: str = "", thread_ts: str | None = None,
        restricted: bool = False, mention_bot: bool = False, reported_size: int | None = None,
    ) -> tuple[Delivery, StoredFile]:  # fmt: skip
        """``user`` shares a file (a ``file_share`` message; an ``app_mention`` with
        ``mention_bot``). ``restricted``: the bot may not download it (403).
        ``reported_size``: the size the event claims (a "100 MB file" without 100 MB of bytes)."""
        stored = StoredFile(self.ids.new("F"), filename, mimetype, data, user, restricted=restricted,
                            channels=[channel], thread_ts=thread_ts, reported_size=reported_size)  # fmt: skip
        self.store.files[stored.id] = stored
        if mention_bot and f"<@{self.workspace.bot_user_id}>" not in text:
            text = f"<@{self.workspace.bot_user_id}> {text}".rstrip()
        file_api = stored.to_api(self.url, self.workspace.team_id)
        message = self._user_message(channel, user, text, thread_ts=thread_ts, files=[file_api],
                                     subtype="file_share")  # fmt: skip
        if mention_bot:
            return self.inject_event(events.app_mention_event(self.workspace, message)), stored
        event = events.user_message_event(self.workspace, message, self._channel(channel).kind,
                                          parent_user=self._parent_user(channel, thread_ts))  # fmt: skip
        return self.inject_event(event), stored

    def start_assistant_thread(self, user: str, *, context_channel: str | None = None) -> Delivery:
        """``user`` opens the app's assistant pane: a new DM thread + ``assistant_thread_started``."""
        channel = self.dm_channel(user)
        root = SlackMessage(channel, self.ids.ts(), self.bot_user.id, True,
                            text="New chat", subtype="assistant_app_thread")  # fmt: skip
        self.store.add_message(root)
        event = events.assistant_thread_started_event(self.workspace, user, channel, root.ts,
                                                      context_channel)  # fmt: skip
        return self.inject_event(event)

    # -- commands and interactions ---------------------------------------------------------

    def slash_command(self, command: str, text: str, *, user: str, channel: str) -> Delivery:
        """``user`` runs ``/command text`` in ``channel`` (a ``slash_commands`` envelope)."""
        user_obj = self.api.ensure_user(user)
        chan = self._channel(channel)
        payload = events.slash_command_payload(
            self.workspace, command=command, text=text, user=user, user_name=user_obj.name,
            channel=channel, channel_name=chan.name or "directmessage",
            response_url=f"{self.url}/commands/{secrets.token_urlsafe(8)}",
        )  # fmt: skip
        return self.delivery.submit("slash_commands", payload)

    def press_button(self, channel: str, ts: str, action_id: str, value: str = "", *, user: str) -> Delivery:
        """``user`` presses a button on the bot's message (an ``interactive`` envelope)."""
        message = self.store.messages[(channel, ts)]
        user_obj = self.api.ensure_user(user)
        payload = events.block_actions_payload(
            self.workspace, user=user, user_name=user_obj.name, channel=channel,
            message=self.api.message_api(message), action_id=action_id, value=value,
            response_url=f"{self.url}/commands/{secrets.token_urlsafe(8)}",
        )  # fmt: skip
        return self.delivery.submit("interactive", payload)
