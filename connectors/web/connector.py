"""WebConnector: the web chat as a connector — primitives become SSE events.

The streaming scheduler calls :meth:`WebConnector.send_text` for a reply's first frame and
:meth:`WebConnector.edit_text` for later ones, always with the full text. This module turns
frames into ``delta`` events (the text that was appended) or ``replace`` events (the text
changed otherwise), tagged with the conversation and stored reply they belong to — both come
with every frame in its :class:`~relaybot.core.contracts.connector.Outgoing` descriptor — and publishes
them on the browser's event channel (:mod:`.hub`). An interrupted reply's final frame says so
in its descriptor; the page styles it (no marker text). Nothing here depends on a tab being
open: events are buffered for a while and the reply is stored by the core either way.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from relaybot import (
    NOTICE,
    BaseConnector,
    ChatKey,
    ConfigError,
    ConnectorHost,
    ImageRef,
    Outgoing,
    ReplyRecord,
    ReplyStatus,
    StreamPolicy,
    VideoRef,
    WebServer,
    hookimpl,
)

from .config import WebConfig
from .hub import EventHub

log = logging.getLogger("relaybot.connectors.web")

#: the browser smooths the text itself, so frames may come as often as the server likes
WEB_POLICY = StreamPolicy(
    max_length=100_000,
    private_interval=0.05,
    group_interval=0.05,
    global_rate=0,
    can_edit=True,
    native_draft=False,
    typing_interval=None,
)
#: uploads a client may still attach to its next message (older ones must be uploaded again)
UPLOADS_PER_CLIENT = 64


@dataclass(slots=True)
class LiveMessage:
    """A bot message being streamed to one client."""

    platform_id: str
    client: str
    conversation_id: int | None
    #: the stored assistant reply it shows, None for notices (command answers, errors)
    reply_id: int | None
    text: str = ""
    final: bool = False

    def ids(self) -> dict[str, Any]:
        """The ids every event about this message carries."""
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.platform_id,
            "reply_id": self.reply_id,
        }


class _ReplyHooks:
    """Per-connector hook object: tells the page what a reply cost, and when it failed."""

    def __init__(self, connector: WebConnector) -> None:
        self.connector = connector

    @hookimpl
    def after_reply(self, reply: ReplyRecord) -> None:
        if reply.chat.platform != self.connector.name:
            return
        from .costs import reply_cost_event

        cost = reply_cost_event(self.connector.core, reply)
        if cost is not None:  # the page shows what the reply cost under it
            self.connector.hub.publish(reply.chat.chat, "cost", cost)
        if reply.status != ReplyStatus.FAILED or reply.platform_message_ids:
            return  # a failed reply that was shown said so in its final frame (see _frame)
        self.connector.hub.publish(
            reply.chat.chat,
            "error",
            {
                "conversation_id": reply.conversation_id,
                "reply_id": reply.message_id,
                "message_id": None,
                "error": reply.error or reply.text or "The answer failed.",
            },
        )


class WebConnector(BaseConnector):
    """Serves the web chat (page, JSON API, SSE) with uvicorn inside the bot's event loop."""

    policy = WEB_POLICY

    def __init__(self, name: str, config: WebConfig) -> None:
        self.name = name
        self.config = config
        self.hub = EventHub()
        #: what the web chat uses of the core (set by :meth:`start`)
        self.host: ConnectorHost | None = None
        self.port = 0
        self._ids = itertools.count(1)
        #: messages whose final frame has not come yet. Every stream ends with a final frame
        #: (this connector never refuses one) unless the scheduler abandons it at shutdown,
        #: so this holds only replies in flight; aclose() clears it.
        self._live: dict[str, LiveMessage] = {}
        self._uploads: dict[str, OrderedDict[str, ImageRef | VideoRef]] = {}
        self._server: WebServer | None = None
        self._hooks = _ReplyHooks(self)
        self._hooks_name = f"web-connector:{name}"

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    @property
    def url(self) -> str:
        """The page's base URL (no trailing slash), once started."""
        host = self.config.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def token(self) -> str | None:
        """The configured access token, if any."""
        return self.config.token.get_secret_value() if self.config.token else None

    @property
    def core(self) -> ConnectorHost:
        """The host, once started (the API's handlers run only then)."""
        if self.host is None:
            raise RuntimeError(f"web connector {self.name!r} is not started")
        return self.host

    async def start(self, host: ConnectorHost) -> None:
        """Bind the port and serve; returns once the page is reachable."""
        try:
            import uvicorn  # noqa: F401  (checked here to name the extra; WebServer imports it)

            from .api import build_app
        except ImportError as exc:
            raise ConfigError(
                f"the web chat needs its extra: pip install 'relaybot[web]' ({exc.name} is missing)",
                key=f"connectors.{self.name}",
            ) from None

        self.host = host
        host.add_hooks(self._hooks, self._hooks_name)  # cost and error events: until we close
        # SSE clients are ended by hub.close() first, so 2 s of grace is plenty for the rest
        server = WebServer(
            build_app(self),
            host=self.config.host,
            port=self.config.port,
            name=f"relaybot:web:{self.name}",
            graceful_timeout=2.0,
            stop_timeout=5.0,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"the web chat cannot listen on {self.config.host}:{self.config.port} ({exc.strerror}); "
                "is another relaybot running? choose another port",
                key=f"connectors.{self.name}.port",
            ) from None
        self._server = server
        self.port = server.port
        log.info("web chat at %s", self.url)

    async def stop(self) -> None:
        """Intake stops with the bot's turns; the page stays served until :meth:`aclose`, so
        open tabs still receive the final events of replies saved at shutdown (a message sent
        meanwhile is stored and answered after the restart). Without a running bot (tests),
        this closes at once."""
        if self.host is None:
            await self.aclose()

    async def aclose(self) -> None:
        """End open streams (after their last events) and stop serving; bounded, idempotent."""
        self.hub.close()
        if self._server is not None:
            await self._server.stop()
        self._server = None
        self._live.clear()

    # ── primitives (called by the streaming scheduler) ──────────────────────────────────────

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Publish a new bot message; its first frame goes out as ``delta`` from empty text."""
        live = LiveMessage(
            f"w{next(self._ids)}",
            chat.chat,
            outgoing.conversation_id,
            outgoing.reply_id if outgoing.kind == "reply" else None,
        )
        self._live[live.platform_id] = live
        self._frame(live, text, final, outgoing)
        return live.platform_id

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """Publish the new text of a message as ``delta`` (appended) or ``replace``."""
        live = self._live.get(message_id)
        if live is None:
            # finished already: a late edit replaces the text whole, with the message's ids
            reply_id = outgoing.reply_id if outgoing.kind == "reply" else None
            live = LiveMessage(message_id, chat.chat, outgoing.conversation_id, reply_id, text="\0")
        self._frame(live, text, final, outgoing)

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """Take a bot message (a progress notice an image replaced) off the page."""
        self._live.pop(message_id, None)
        self.hub.publish(chat.chat, "remove", {"message_id": message_id})

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Store the image through the core's media path and show it in the conversation."""
        ref = await self.core.media.save(image, mime_type=mime_type)
        conversation_id = outgoing.conversation_id
        if conversation_id is None:
            conversation_id = await self._conversation_id(chat)
        platform_id = f"w{next(self._ids)}"
        self.hub.publish(
            chat.chat,
            "image",
            {
                "conversation_id": conversation_id,
                "message_id": platform_id,
                "reply_id": outgoing.reply_id,
                "url": media_url(ref.uri),
                "caption": caption,
                "width": ref.width,
                "height": ref.height,
            },
        )
        return platform_id

    # ── helpers for the API ─────────────────────────────────────────────────────────────────

    def chat_of(self, client: str) -> ChatKey:
        """The ChatKey of a browser (each browser is its own chat)."""
        return ChatKey(self.name, client)

    def remember_upload(self, client: str, ref: ImageRef | VideoRef) -> None:
        """Let ``client`` attach ``ref`` to a message it sends later."""
        uploads = self._uploads.setdefault(client, OrderedDict())
        uploads[ref.uri] = ref
        uploads.move_to_end(ref.uri)
        while len(uploads) > UPLOADS_PER_CLIENT:
            uploads.popitem(last=False)

    def upload(self, client: str, uri: str) -> ImageRef | VideoRef | None:
        """A reference ``client`` uploaded recently, or None."""
        uploads = self._uploads.get(client)
        return uploads.get(uri) if uploads is not None else None

    def snapshot(self, client: str) -> None:
        """Re-publish the full text of the client's replies in flight (a tab just opened)."""
        for live in list(self._live.values()):
            if live.client == client and not live.final:
                self.hub.publish(client, "replace", {**live.ids(), "text": live.text})

    # ── internals ───────────────────────────────────────────────────────────────────────────

    async def _conversation_id(self, chat: ChatKey) -> int | None:
        """The id of the chat's active conversation (None before the first one)."""
        conv = await self.core.conversations(chat).active()
        return conv.id if conv is not None else None

    def _frame(self, live: LiveMessage, text: str, final: bool, outgoing: Outgoing) -> None:
        interrupted = final and outgoing.interrupted
        if text.startswith(live.text):
            if len(text) > len(live.text):
                self.hub.publish(live.client, "delta", {**live.ids(), "text": text[len(live.text) :]})
        else:
            self.hub.publish(live.client, "replace", {**live.ids(), "text": text})
        live.text = text
        if final:
            live.final = True
            self._live.pop(live.platform_id, None)
            if outgoing.failed:
                # the reply failed: its text is the reason; the page shows it as an error (and
                # no "done" claims it complete first)
                self.hub.publish(live.client, "error", {**live.ids(), "error": text, "status": "failed"})
                return
            self.hub.publish(
                live.client,
                "interrupted" if interrupted else "done",
                {**live.ids(), "status": "interrupted" if interrupted else "complete"},
            )


def media_url(uri: str) -> str:
    """The page's URL of a ``media:<sha256>`` reference (other URIs are returned as they are)."""
    return "/media/" + uri.removeprefix("media:") if uri.startswith("media:") else uri
