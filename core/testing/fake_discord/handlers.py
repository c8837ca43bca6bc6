"""The REST endpoints the fake implements, as discord.py calls them.

Start-up (``/users/@me``, ``/gateway``, ``/gateway/bot``, ``/oauth2/applications/@me``),
messages (create with embeds, ``message_reference``, ``allowed_mentions`` and multipart files;
get, list, edit, delete), typing, DMs, threads, application-command sync, interaction
callbacks and their webhooks (``@original`` and follow-ups). Every bot-made change is also
dispatched on the gateway (``MESSAGE_CREATE`` / ``_UPDATE`` / ``_DELETE``), as Discord does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from relaybot.core.testing.fake_discord.objects import (
    PUBLIC_THREAD,
    FakeChannel,
    FakeUser,
    iso_now,
)
from relaybot.core.testing.fake_discord.rest import Call, RouteSpec, UploadedFile
from relaybot.core.testing.fake_discord.state import FakeInteraction, State
from relaybot.core.testing.fake_discord.store import StoredAttachment, StoredMessage
from relaybot.core.testing.fake_discord.validation import (
    DiscordError,
    already_acknowledged,
    apply_allowed_mentions,
    cannot_edit_others,
    empty_message,
    invalid_form_body,
    too_large,
    unknown_interaction,
    unknown_message,
    validate_message_body,
)

EPHEMERAL = 64
LOADING = 128
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


class Dispatcher(Protocol):
    """What the handlers need from the gateway: dispatch an event to the bot's sessions."""

    def dispatch(self, event: str, data: dict[str, Any], *, message: StoredMessage | None = None) -> None: ...


class Handlers:
    """The endpoint implementations over a :class:`~.state.State`."""

    def __init__(self, state: State, gateway: Dispatcher, *, clock: Callable[[], float], upload_limit: int,
                 interaction_timeout: float, gateway_url: Callable[[], str]) -> None:  # fmt: skip
        self.state = state
        self.gateway = gateway
        self.clock = clock
        self.upload_limit = upload_limit
        self.interaction_timeout = interaction_timeout
        self.gateway_url = gateway_url

    def routes(self) -> list[RouteSpec]:
        """The route table (order matters: literal segments before ``{message_id}``)."""
        wh = "/webhooks/{application_id}/{interaction_token}"
        return [
            RouteSpec("GET", "/users/@me", "other", self.get_me),
            RouteSpec("GET", "/gateway", "other", self.get_gateway, auth=False),
            RouteSpec("GET", "/gateway/bot", "other", self.get_gateway_bot),
            RouteSpec("GET", "/oauth2/applications/@me", "other", self.get_application),
            RouteSpec("GET", "/applications/@me", "other", self.get_application),
            RouteSpec("POST", "/users/@me/channels", "other", self.create_dm),
            RouteSpec("GET", "/channels/{channel_id}", "other", self.get_channel),
            RouteSpec("GET", "/channels/{channel_id}/messages", "other", self.list_messages),
            RouteSpec("POST", "/channels/{channel_id}/messages", "send", self.create_message),
            RouteSpec("GET", "/channels/{channel_id}/messages/{message_id}", "other", self.get_message),
            RouteSpec("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit", self.edit_message),
            RouteSpec("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete",
                      self.delete_message),
            RouteSpec("POST", "/channels/{channel_id}/messages/{message_id}/threads", "other",
                      self.start_thread_from_message),
            RouteSpec("POST", "/channels/{channel_id}/threads", "other", self.start_thread),
            RouteSpec("POST", "/channels/{channel_id}/typing", "typing", self.typing),
            RouteSpec("GET", "/applications/{application_id}/commands", "other", self.get_commands),
            RouteSpec("PUT", "/applications/{application_id}/commands", "other", self.put_commands),
            RouteSpec("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "other",
                      self.get_commands),
            RouteSpec("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "other",
                      self.put_commands),
            RouteSpec("POST", "/interactions/{interaction_id}/{interaction_token}/callback", "interaction",
                      self.interaction_callback, auth=False, counts_global=False),
            RouteSpec("GET", wh + "/messages/@original", "webhook", self.get_original, auth=False),
            RouteSpec("PATCH", wh + "/messages/@original", "webhook", self.edit_original, auth=False),
            RouteSpec("DELETE", wh + "/messages/@original", "webhook", self.delete_original, auth=False),
            RouteSpec("POST", wh, "webhook", self.create_followup, auth=False),
            RouteSpec("PATCH", wh + "/messages/{message_id}", "webhook", self.edit_followup, auth=False),
        ]  # fmt: skip

    # -- start-up --------------------------------------------------------------------------

    async def get_me(self, call: Call) -> tuple[int, Any]:
        return 200, self.state.bot.to_api() | {"verified": True, "mfa_enabled": False, "flags": 0}

    async def get_gateway(self, call: Call) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url()}

    async def get_gateway_bot(self, call: Call) -> tuple[int, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return 200, {"url": self.gateway_url(), "shards": 1, "session_start_limit": limit}

    async def get_application(self, call: Call) -> tuple[int, Any]:
        st = self.state
        return 200, {
            "id": str(st.application_id), "name": st.bot.username, "icon": None, "description": "",
            "rpc_origins": [], "bot_public": True, "bot_require_code_grant": False,
            "owner": FakeUser(st.application_id + 1, "owner").to_api(), "team": None,
            "verify_key": "0" * 64, "flags": st.application_flags, "bot": st.bot.to_api(),
            "summary": "", "redirect_uris": [], "interactions_endpoint_url": None,
            "approximate_guild_count": len(st.guilds),
        }  # fmt: skip

    # -- channels and messages -------------------------------------------------------------

    async def get_channel(self, call: Call) -> tuple[int, Any]:
        return 200, self.state.channel(call.int_param("channel_id")).to_api()

    async def create_dm(self, call: Call) -> tuple[int, Any]:
        user = self.state.users.get(int((call.body or {}).get("recipient_id", 0)))
        if user is None:
            raise DiscordError(400, 10013, "Unknown User")
        return 200, self.state.dm_channel(user).to_api()

    def _message(self, call: Call) -> StoredMessage:
        channel = self.state.channel(call.int_param("channel_id"))
        found = self.state.store.messages.get(call.int_param("message_id"))
        if found is None or found.deleted or found.channel_id != channel.id:
            raise unknown_message()
        return found

    async def get_message(self, call: Call) -> tuple[int, Any]:
        return 200, self.state.message_payload(self._message(call))

    async def list_messages(self, call: Call) -> tuple[int, Any]:
        channel = self.state.channel(call.int_param("channel_id"))
        limit = min(int(call.query.get("limit", 50)), 100)
        alive = [m for m in self.state.store.by_channel.get(channel.id, []) if not m.deleted]
        newest_first = list(reversed(alive))
        if "before" in call.query:
            newest_first = [m for m in newest_first if m.id < int(call.query["before"])]
        return 200, [self.state.message_payload(m) for m in newest_first[:limit]]

    async def create_message(self, call: Call) -> tuple[int, Any]:
        channel = self.state.channel(call.int_param("channel_id"))
        message = self.post_message(channel, self.state.bot, call.body or {}, call.files, call.base_url)
        call.message_id, call.text = message.id, message.content
        return 200, self.state.message_payload(message)

    async def edit_message(self, call: Call) -> tuple[int, Any]:
        message = self._message(call)
        if message.author.id != self.state.bot.id:
            raise cannot_edit_others()
        self.apply_edit(message, call.body or {}, call.files, call.base_url)
        call.text = message.content
        return 200, self.state.message_payload(message)

    async def delete_message(self, call: Call) -> tuple[int, Any]:
        message = self._message(call)
        self.delete(message)
        return 204, None

    async def typing(self, call: Call) -> tuple[int, Any]:
        self.state.channel(call.int_param("channel_id"))
        return 204, None

    async def start_thread_from_message(self, call: Call) -> tuple[int, Any]:
        message = self._message(call)
        # a thread started from a message has that message's id, as on Discord
        return 201, self._new_thread(message.channel_id, message.id, call.body or {}).to_api()

    async def start_thread(self, call: Call) -> tuple[int, Any]:
        parent = self.state.channel(call.int_param("channel_id"))
        return 201, self._new_thread(parent.id, self.state.new_id(), call.body or {}).to_api()

    def _new_thread(self, parent_id: int, thread_id: int, body: dict[str, Any]) -> FakeChannel:
        parent = self.state.channel(parent_id)
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise invalid_form_body({"name": {"_errors": [
                {"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100 in length."}]}})
        thread = FakeChannel(thread_id, int(body.get("type") or PUBLIC_THREAD), name=name,
                             guild_id=parent.guild_id, parent_id=parent.id, owner_id=self.state.bot.id)
        self.state.channels[thread.id] = thread
        if parent.guild_id is not None:
            self.state.guilds[parent.guild_id].channels[thread.id] = thread
        self.gateway.dispatch("THREAD_CREATE", thread.to_api() | {"newly_created": True})
        return thread

    # -- the shared message logic (also used by the test-side API) --------------------------

    def post_message(self, channel: FakeChannel, author: FakeUser, body: dict[str, Any],
                     files: list[UploadedFile], base_url: str, *, webhook_id: int | None = None,
                     interaction_id: int | None = None, flags: int = 0) -> StoredMessage:  # fmt: skip
        """Validate and store a message from ``author`` in ``channel``, then dispatch it."""
        validate_message_body(body, has_files=bool(files), creating=not flags & LOADING)
        reference_id = self._reference(channel, body.get("message_reference"))
        content = str(body.get("content") or "")
        reply_author = self.state.store.messages[reference_id].author.id if reference_id else None
        users, roles, everyone = apply_allowed_mentions(content, body.get("allowed_mentions"),
                                                        reply_author=reply_author)  # fmt: skip
        message = StoredMessage(
            id=self.state.new_id(), channel_id=channel.id, guild_id=channel.guild_id, author=author,
            content=content, embeds=list(body.get("embeds") or []),
            attachments=self._attachments(channel, files, base_url), reference_id=reference_id,
            mentions=[self.state.users[u] for u in dict.fromkeys(users) if u in self.state.users],
            mention_roles=self._guild_roles(channel, roles), mention_everyone=everyone,
            allowed_mentions=body.get("allowed_mentions"),
            member=self.state.member(channel.guild_id, author.id), webhook_id=webhook_id,
            interaction_id=interaction_id, flags=flags | int(body.get("flags") or 0) & EPHEMERAL,
        )  # fmt: skip
        self.state.store.add_message(message)
        channel.last_message_id = message.id
        self.gateway.dispatch("MESSAGE_CREATE", self.state.message_payload(message), message=message)
        return message

    def apply_edit(self, message: StoredMessage, body: dict[str, Any], files: list[UploadedFile],
                   base_url: str) -> None:  # fmt: skip
        """Apply an edit body (only the keys present change), then dispatch ``MESSAGE_UPDATE``."""
        validate_message_body(body, has_files=bool(files), creating=False)
        content = str(body["content"] or "") if "content" in body else message.content
        embeds = list(body["embeds"] or []) if "embeds" in body else message.embeds
        attachments = message.attachments
        if "attachments" in body:
            keep = {int(a["id"]) for a in body["attachments"] or [] if str(a.get("id", "")).isdigit()}
            attachments = [a for a in attachments if a.id in keep]
        channel = self.state.channels[message.channel_id]
        attachments = attachments + self._attachments(channel, files, base_url)
        if not content and not embeds and not attachments:
            raise empty_message()  # checked before anything changes: a refused edit changes nothing
        message.content, message.embeds, message.attachments = content, embeds, attachments
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        message.flags &= ~LOADING
        message.edited_timestamp = iso_now()
        message.versions.append(message.content)
        self.state.store.record_text("edited", message)
        self.gateway.dispatch("MESSAGE_UPDATE", self.state.message_payload(message), message=message)

    def delete(self, message: StoredMessage) -> None:
        """Delete a message (kept in the store, marked) and dispatch ``MESSAGE_DELETE``."""
        message.deleted = True
        self.state.store.record_text("deleted", message)
        data: dict[str, Any] = {"id": str(message.id), "channel_id": str(message.channel_id)}
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
        self.gateway.dispatch("MESSAGE_DELETE", data)

    def _reference(self, channel: FakeChannel, reference: dict[str, Any] | None) -> int | None:
        if not reference or reference.get("message_id") is None:
            return None
        target = self.state.store.messages.get(int(reference["message_id"]))
        if target is None or target.deleted:
            if reference.get("fail_if_not_exists") is False:
                return None
            raise invalid_form_body({"message_reference": {"_errors": [
                {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]}})
        return target.id

    def _guild_roles(self, channel: FakeChannel, roles: list[int]) -> list[int]:
        guild = self.state.guilds.get(channel.guild_id) if channel.guild_id else None
        return [r for r in dict.fromkeys(roles) if guild and r in guild.roles]

    def _attachments(
        self, channel: FakeChannel, files: list[UploadedFile], base_url: str
    ) -> list[StoredAttachment]:
        out = []
        for f in files:
            if len(f.data) > self.upload_limit:
                raise too_large()
            attachment = add_attachment(self.state, channel.id, f.filename, f.data, f.content_type, base_url)
            out.append(attachment)
        return out

    # -- application commands --------------------------------------------------------------

    async def get_commands(self, call: Call) -> tuple[int, Any]:
        guild = int(call.params["guild_id"]) if "guild_id" in call.params else None
        return 200, self.state.commands.get(guild, [])

    async def put_commands(self, call: Call) -> tuple[int, Any]:
        guild = int(call.params["guild_id"]) if "guild_id" in call.params else None
        if call.int_param("application_id") != self.state.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        body = call.body if isinstance(call.body, list) else []
        if len(body) > 100:
            raise DiscordError(400, 30032, "Maximum number of application commands reached (100)")
        errors: dict[str, Any] = {}
        for i, cmd in enumerate(body):
            name = str(cmd.get("name", ""))
            if not _COMMAND_NAME.match(name) or name != name.lower():
                errors[str(i)] = {"name": {"_errors": [
                    {"code": "APPLICATION_COMMAND_INVALID_NAME", "message": "Command name is invalid"}]}}
            elif int(cmd.get("type", 1)) == 1 and not 1 <= len(str(cmd.get("description", ""))) <= 100:
                errors[str(i)] = {"description": {"_errors": [
                    {"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100 in length."}]}}
        if errors:
            raise invalid_form_body(errors)
        old = {c["name"]: c["id"] for c in self.state.commands.get(guild, [])}
        synced = []
        for cmd in body:
            entry = {
                "type": 1, "description": "", "options": [], "default_member_permissions": None,
                "dm_permission": True, "nsfw": False, "contexts": None, "integration_types": [0],
            } | dict(cmd)  # fmt: skip
            entry |= {"id": old.get(cmd["name"]) or str(self.state.new_id()),
                      "application_id": str(self.state.application_id), "version": str(self.state.new_id())}
            if guild is not None:
                entry["guild_id"] = str(guild)
            synced.append(entry)
        self.state.commands[guild] = synced
        return 200, synced

    # -- interactions ----------------------------------------------------------------------

    def _interaction(self, call: Call, *, by_id: bool) -> FakeInteraction:
        token = call.params["interaction_token"]
        found = next((i for i in self.state.interactions.values() if i.token == token), None)
        if found is None or (by_id and str(found.id) != call.params["interaction_id"]):
            raise unknown_interaction()
        if not by_id and call.int_param("application_id") != self.state.application_id:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        call.channel_id = found.channel_id
        return found

    async def interaction_callback(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction(call, by_id=True)
        if interaction.response_type is not None:
            raise already_acknowledged()
        if self.clock() - interaction.created_at > self.interaction_timeout:
            # Discord gives 3 seconds to answer; later, the token is unknown for the callback
            raise unknown_interaction()
        body = call.body or {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        channel = self.state.channels[interaction.channel_id]
        message = None
        if kind == 4:
            message = self.post_message(channel, self.state.bot, data, call.files, call.base_url,
                                        interaction_id=interaction.id)  # fmt: skip
        elif kind == 5:
            message = self.post_message(channel, self.state.bot, {}, [], call.base_url,
                                        interaction_id=interaction.id,
                                        flags=LOADING | int(data.get("flags") or 0) & EPHEMERAL)  # fmt: skip
        elif kind not in (6, 7, 8, 9):
            raise invalid_form_body({"type": {"_errors": [
                {"code": "BASE_TYPE_CHOICES",
                 "message": f"Value must be one of {{4, 5, 6, 7, 8, 9}}, got {kind}"}]}})
        interaction.response_type = kind
        if message is not None:
            interaction.original_id = message.id
            call.message_id, call.text = message.id, message.content
        if call.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        meta: dict[str, Any] = {"id": str(interaction.id), "type": 2,
                                "response_message_loading": kind == 5,
                                "response_message_ephemeral": bool(message and message.flags & EPHEMERAL)}
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            meta["response_message_id"] = str(message.id)
            resource["message"] = self.state.message_payload(message)
        return 200, {"interaction": meta, "resource": resource}

    def _original(self, call: Call) -> StoredMessage:
        interaction = self._interaction(call, by_id=False)
        found = self.state.store.messages.get(interaction.original_id or 0)
        if found is None or found.deleted:
            raise unknown_message()
        call.message_id = found.id
        return found

    async def get_original(self, call: Call) -> tuple[int, Any]:
        return 200, self.state.message_payload(self._original(call))

    async def edit_original(self, call: Call) -> tuple[int, Any]:
        message = self._original(call)
        self.apply_edit(message, call.body or {}, call.files, call.base_url)
        call.text = message.content
        return 200, self.state.message_payload(message)

    async def delete_original(self, call: Call) -> tuple[int, Any]:
        self.delete(self._original(call))
        return 204, None

    async def create_followup(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction(call, by_id=False)
        if interaction.response_type is None:
            raise unknown_message()  # a follow-up needs an answered interaction
        channel = self.state.channels[interaction.channel_id]
        message = self.post_message(
            channel, self.state.bot, call.body or {}, call.files, call.base_url,
            webhook_id=self.state.application_id, interaction_id=interaction.id,
        )  # fmt: skip
        interaction.followup_ids.append(message.id)
        call.message_id, call.text = message.id, message.content
        if call.query.get("wait") not in ("1", "true", "True"):
            return 204, None
        return 200, self.state.message_payload(message)

    async def edit_followup(self, call: Call) -> tuple[int, Any]:
        interaction = self._interaction(call, by_id=False)
        message_id = call.int_param("message_id")
        found = self.state.store.messages.get(message_id)
        if found is None or found.deleted or found.interaction_id != interaction.id:
            raise unknown_message()
        self.apply_edit(found, call.body or {}, call.files, call.base_url)
        call.text = found.content
        return 200, self.state.message_payload(found)


def add_attachment(state: State, channel_id: int, filename: str, data: bytes | None, content_type: str,
                   base_url: str, *, size: int | None = None) -> StoredAttachment:  # fmt: skip
    """Store a file and give it a loopback URL (``{base_url}/attachments/{channel}/{id}/{name}``)."""
    attachment_id = state.new_id()
    width = height = None
    if data is not None and content_type.startswith("image/"):
        width, height = _image_size(data)
    attachment = StoredAttachment(
        attachment_id, filename, content_type, len(data) if data is not None else int(size or 0),
        f"{base_url}/attachments/{channel_id}/{attachment_id}/{filename}", data, width, height,
    )  # fmt: skip
    state.store.attachments[attachment_id] = attachment
    return attachment


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:  # not an image pillow knows: Discord leaves the size out too
        return None, None
