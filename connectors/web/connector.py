"""WebConnector: the web chat as a connector — primitives become SSE events.

The streaming scheduler calls :meth:`WebConnector.send_text` for a reply's first frame and
:meth:`WebConnector.edit_text` for later ones, always with the full text. This module turns
frames into ``delta`` events (the text that was appended) or ``replace`` events (the text
changed otherwise), tagged with the conversation and message they belong to, and publishes
them on the browser's event channel (:mod:`.hub`). Nothing here depends on a tab being open:
events are buffered for a while and the reply is stored by the core either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from relaybot.core.connector import BaseConnector, MessageHandler, StreamPolicy
from relaybot.core.errors import ConfigError
from relaybot.core.hookspecs import hookimpl
from relaybot.core.hooktypes import ReplyRecord
from relaybot.core.models import ChatKey, ImageRef, ReplyStatus, Role
from relaybot.core.streaming.scheduler import INTERRUPTED_MARKER

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
#: messages tracked while streaming, across all clients (bounded even if a stream never ends)
MAX_LIVE = 10_000


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


def split_marker(text: str) -> tuple[str, bool]:
    """Remove the scheduler's interruption marker paragraph; True if it was there.

    The page shows interruption as a styled marker instead of text.
    """
    paragraphs = text.split("\n\n")
    for i in range(len(paragraphs) - 1, -1, -1):
        if paragraphs[i].strip() == INTERRUPTED_MARKER:
            del paragraphs[i]
            return "\n\n".join(paragraphs).rstrip(), True
    return text, False


class _ReplyHooks:
    """Per-connector hook object: tells the page what a reply cost, and when it failed."""

    def __init__(self, connector: WebConnector) -> None:
        self.connector = connector

    @hookimpl
    def after_reply(self, reply: ReplyRecord) -> None:
        if reply.chat.platform != self.connector.name:
            return
        from .costs import reply_cost_event

        cost = reply_cost_event(self.connector.app, reply)
        if cost is not None:  # the page shows what the reply cost under it
            self.connector.hub.publish(reply.chat.chat, "cost", cost)
        if reply.status != ReplyStatus.FAILED:
            return
        self.connector.hub.publish(
            reply.chat.chat,
            "error",
            {
                "conversation_id": reply.conversation_id,
                "reply_id": reply.message_id,
                "message_id": reply.platform_message_ids[-1] if reply.platform_message_ids else None,
                "error": reply.text or "The answer failed.",
            },
        )


class WebConnector(BaseConnector):
    """Serves the web chat (page, JSON API, SSE) with uvicorn inside the bot's event loop."""

    policy = WEB_POLICY

    def __init__(self, name: str, config: WebConfig) -> None:
        self.name = name
        self.config = config
        self.hub = EventHub()
        self.handler: MessageHandler | None = None
        self.port = 0
        self._ids = itertools.count(1)
        self._live: OrderedDict[str, LiveMessage] = OrderedDict()
        #: stored replies already shown by a bot message (a later notice must not claim them)
        self._claimed: OrderedDict[int, None] = OrderedDict()
        self._uploads: dict[str, OrderedDict[str, ImageRef]] = {}
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
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

    async def start(self, handler: MessageHandler) -> None:
        """Bind the port and serve; returns once the page is reachable."""
        try:
            import uvicorn

            from .api import build_app
        except ImportError as exc:
            raise ConfigError(
                f"the web chat needs its extra: pip install 'relaybot[web]' ({exc.name} is missing)",
                key=f"connectors.{self.name}",
            ) from None

        self.handler = handler
        if self.app is not None and not self.app.plugins.pm.has_plugin(self._hooks_name):
            self.app.plugins.register(self._hooks, self._hooks_name)
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the web chat cannot listen on {self.config.host}:{self.config.port} ({exc.strerror}); "
                "is another relaybot running? choose another port",
                key=f"connectors.{self.name}.port",
            ) from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        # the bot's CLI owns signal handling; uvicorn must not swallow Ctrl-C
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]  # older uvicorn
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"relaybot:web:{self.name}")
        while not server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("the web chat server stopped during start-up")
            await asyncio.sleep(0.01)
        log.info("web chat at %s", self.url)

    async def stop(self) -> None:
        """End open streams and stop serving (bounded: never hangs on a client)."""
        self.hub.close()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._server.force_exit = True
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        self._server = self._task = None
        if self.app is not None and self.app.plugins.pm.has_plugin(self._hooks_name):
            self.app.plugins.pm.unregister(name=self._hooks_name)

    # ── primitives (called by the streaming scheduler) ──────────────────────────────────────

    async def send_text(
        self, chat: ChatKey, text: str, *, final: bool = True, reply_to: str | None = None
    ) -> str:
        """Publish a new bot message; its first frame goes out as ``delta`` from empty text."""
        conversation_id, reply_id = await self._locate(chat, reply_to)
        live = LiveMessage(f"w{next(self._ids)}", chat.chat, conversation_id, reply_id)
        self._live[live.platform_id] = live
        while len(self._live) > MAX_LIVE:
            self._live.popitem(last=False)
        self._frame(live, text, final)
        return live.platform_id

    async def edit_text(self, chat: ChatKey, message_id: str, text: str, *, final: bool) -> None:
        """Publish the new text of a message as ``delta`` (appended) or ``replace``."""
        live = self._live.get(message_id)
        if live is None:
            # finished or evicted: a late edit replaces the text whole, with the message's ids
            live = LiveMessage(message_id, chat.chat, await self._conversation_id(chat), None, text="\0")
        self._frame(live, text, final)

    async def send_image(
        self, chat: ChatKey, image: bytes, *, caption: str = "", mime_type: str = "image/png"
    ) -> str:
        """Store the image through the core's media path and show it in the conversation."""
        ref = await self.app.media.save(image, mime_type=mime_type)
        conversation_id = await self._conversation_id(chat)
        platform_id = f"w{next(self._ids)}"
        self.hub.publish(
            chat.chat,
            "image",
            {
                "conversation_id": conversation_id,
                "message_id": platform_id,
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

    def remember_upload(self, client: str, ref: ImageRef) -> None:
        """Let ``client`` attach ``ref`` to a message it sends later."""
        uploads = self._uploads.setdefault(client, OrderedDict())
        uploads[ref.uri] = ref
        uploads.move_to_end(ref.uri)
        while len(uploads) > UPLOADS_PER_CLIENT:
            uploads.popitem(last=False)

    def upload(self, client: str, uri: str) -> ImageRef | None:
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
        conv = await self.app.store.active_conversation(chat)
        return conv.id if conv is not None else None

    async def _locate(self, chat: ChatKey, reply_to: str | None = None) -> tuple[int | None, int | None]:
        """The active conversation of ``chat`` and the stored reply a new bot message shows.

        The active conversation is sound because the core never changes it while a reply
        streams: switching, /new and deleting first cancel the reply and wait until its last
        frame was delivered. The reply is the conversation's leaf when that is an assistant
        message no earlier bot message claimed, and this message belongs to a reply: it is
        still streaming, or it answers a user message (``reply_to``; a short reply may be
        saved complete before its first frame goes out), or a reply task runs in the chat
        (regenerate). Anything else — a command's answer, an error notice — is a notice.
        """
        store = self.app.store
        conv = await store.active_conversation(chat)
        if conv is None:
            return None, None
        if conv.leaf_id is None or conv.leaf_id in self._claimed:
            return conv.id, None
        leaf = await store.get_message(conv.leaf_id)
        if leaf is None or leaf.role != Role.ASSISTANT:
            return conv.id, None
        if (
            leaf.status == ReplyStatus.STREAMING
            or reply_to is not None
            or self.app.conversations.is_streaming(chat)
        ):
            self._claimed[leaf.id] = None
            while len(self._claimed) > MAX_LIVE:
                self._claimed.popitem(last=False)
            return conv.id, leaf.id
        return conv.id, None

    def _frame(self, live: LiveMessage, text: str, final: bool) -> None:
        interrupted = False
        if final:
            text, interrupted = split_marker(text)
        if text.startswith(live.text):
            if len(text) > len(live.text):
                self.hub.publish(live.client, "delta", {**live.ids(), "text": text[len(live.text) :]})
        else:
            self.hub.publish(live.client, "replace", {**live.ids(), "text": text})
        live.text = text
        if final:
            live.final = True
            self._live.pop(live.platform_id, None)
            self.hub.publish(
                live.client,
                "interrupted" if interrupted else "done",
                {**live.ids(), "status": "interrupted" if interrupted else "complete"},
            )


def media_url(uri: str) -> str:
    """The page's URL of a ``media:<sha256>`` reference (other URIs are returned as they are)."""
    return "/media/" + uri.removeprefix("media:") if uri.startswith("media:") else uri
