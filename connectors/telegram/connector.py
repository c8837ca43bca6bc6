"""``TelegramConnector``: python-telegram-bot for the wire, relaybot's scheduler for the pace.

Lifecycle: :meth:`~TelegramConnector.start` builds a PTB ``Application`` (no PTB rate limiter —
the core's streaming scheduler paces every request), checks the token with ``getMe``, publishes
the command menu (``setMyCommands``) and starts long polling or the webhook receiver.
:meth:`~TelegramConnector.stop` stops intake promptly, even while a long poll is open; the HTTP
client stays usable until the core calls :meth:`~TelegramConnector.aclose` once the schedulers
finished, so final texts ("interrupted" edits) can still go out.

Incoming: each update is routed (:mod:`.updates`) and handed to the host at once
(:meth:`ConnectorHost.deliver <relaybot.ConnectorHost.deliver>`); photos, image files and videos
are downloaded into the media store as the message's preparation. The core keeps each chat's
order (a text after a photo waits for the photo's download); other chats never wait.

Outgoing primitives never sleep or retry: Bot API errors become the relaybot errors the
scheduler acts on (:mod:`.errors`). Mid-stream frames are plain text; final texts carry
entities from :func:`~.formatting.markdown_to_entities`, with a plain-text retry if Telegram
refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import (
    BotCommand,
    LinkPreviewOptions,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram import error as tg
from telegram.constants import ChatAction
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.request import BaseRequest

from relaybot import (
    NOTICE,
    BaseConnector,
    ChatKey,
    ConfigError,
    ConnectorHost,
    ImageRef,
    IncomingMessage,
    Outgoing,
    PlatformError,
    RelaybotError,
    StreamPolicy,
    VideoRef,
    mark_interrupted,
    redact,
    use_optional,
)

from .access import AccessList, TelegramHooks
from .config import TelegramConfig
from .errors import is_entity_error, translate
from .formatting import markdown_to_entities, utf16_len
from .media import MAX_CAPTION, fetch_image
from .updates import Routed, normalise_admins, route
from .webhook import WebhookServer

log = logging.getLogger("relaybot.connectors.telegram")

_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# Every update type except those Telegram sends only on request. Always explicit: without a
# list Telegram keeps whatever an earlier run of this bot asked for.
ALLOWED_UPDATES = [
    kind for kind in Update.ALL_TYPES
    if kind not in ("chat_member", "message_reaction", "message_reaction_count")
]  # fmt: skip
# Bot API command names: 1-32 of a-z, 0-9, _ ; descriptions 1-256 characters.
_MAX_COMMANDS = 100


def policy_for(config: TelegramConfig) -> StreamPolicy:
    """The streaming policy of a Telegram bot with these settings."""
    return StreamPolicy(
        max_length=4096,
        length_unit="utf16",
        private_interval=config.private_interval,
        group_interval=config.group_interval,
        global_rate=config.global_rate,
        can_edit=True,
        native_draft=config.use_drafts,
        typing_interval=4.5,
    )


class TelegramConnector(BaseConnector):
    """A Telegram bot (one ``[connectors.NAME]`` table). See the module docstring."""

    def __init__(self, name: str, config: TelegramConfig) -> None:
        self.name = name
        self.config = config
        self.policy = policy_for(config)
        self.application: Application[Any, Any, Any, Any, Any, Any] | None = None
        #: the bot's own Telegram user (from ``getMe``), set by :meth:`start`
        self.bot_user: Any = None
        self.webhook: WebhookServer | None = None
        #: what the connector uses of the core (set by :meth:`start`)
        self.host: ConnectorHost | None = None
        self._hooks: TelegramHooks | None = None
        self._hooks_name = f"{name}-telegram"
        self._admins = normalise_admins(config.admins)
        self._max_bytes = int(config.max_download_mb * 1024 * 1024)
        #: downloads in progress (a message's preparation), cancelled at stop
        self._tasks: set[asyncio.Future[IncomingMessage | None]] = set()
        self._accepting = False
        self._closed = False
        #: our own PTB request objects (aiohttp), closed by us too: PTB skips closing them
        #: when ``initialize`` failed half-way (getMe refused), and aiohttp logs an error for
        #: every session left open
        self._requests: list[BaseRequest] = []

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        cfg = self.config
        timeout = cfg.request_timeout
        builder = ApplicationBuilder().token(cfg.token.get_secret_value())
        if use_optional(cfg.http_client, "aiohttp", setting="http_client"):
            from .request import AiohttpRequest

            # PTB's HTTP layer on aiohttp: a fraction of the CPU per Bot API call (request.py)
            self._requests = [
                AiohttpRequest(
                    connection_pool_size=size,
                    connect_timeout=min(10.0, timeout),
                    read_timeout=timeout,
                    write_timeout=timeout,
                    pool_timeout=timeout,
                )
                for size in (cfg.connection_pool_size, 1)  # API calls; getUpdates
            ]
            builder = builder.request(self._requests[0]).get_updates_request(self._requests[1])
        else:
            builder = (
                builder
                # many chats stream at once: one pooled connection per concurrent request
                .connection_pool_size(cfg.connection_pool_size)
                .connect_timeout(min(10.0, timeout))
                .read_timeout(timeout)
                .write_timeout(timeout)
                .pool_timeout(timeout)
                .get_updates_connect_timeout(min(10.0, timeout))
                .get_updates_read_timeout(timeout)
                .get_updates_pool_timeout(timeout)
            )
        if cfg.base_url:
            builder = builder.base_url(cfg.base_url).base_file_url(cfg.file_url())
        if cfg.mode == "webhook":
            builder = builder.updater(None)  # our own receiver feeds the update queue
        application = builder.build()
        application.add_handler(TypeHandler(Update, self._on_update))
        application.add_error_handler(self._on_handler_error)
        return application

    async def start(self, host: ConnectorHost) -> None:
        """Check the token, publish commands, start receiving. Raises ConfigError on a bad token."""
        self.host = host
        application = self._build()
        try:
            await application.initialize()  # getMe
        except tg.InvalidToken:
            await _quietly(application.shutdown())
            await self._close_requests()
            raise ConfigError(
                "Telegram refused the bot token (getMe answered Unauthorized); set it to the "
                "token @BotFather gave you",
                path=host.config.source,
                key=f"connectors.{self.name}.token",
            ) from None
        except tg.TelegramError as exc:
            await _quietly(application.shutdown())
            await self._close_requests()
            where = self.config.base_url or "https://api.telegram.org"
            raise PlatformError(
                f"cannot reach the Telegram Bot API at {where}: {redact(exc.message)}"
            ) from None
        self.application = application
        self.bot_user = application.bot.bot
        self._hooks = TelegramHooks(
            self, AccessList(self.config.allowed_users, self.config.allowed_chats,
                             self.config.admins, self.config.denied_message),
        )  # fmt: skip
        host.add_hooks(self._hooks, self._hooks_name)  # the allow-lists: removed when we close
        await self._publish_commands()
        self._accepting = True
        await application.start()
        if self.config.mode == "webhook":
            await self._start_webhook()
        else:
            assert application.updater is not None
            await application.updater.start_polling(
                timeout=self.config.poll_timeout,
                error_callback=self._on_poll_error,
                allowed_updates=ALLOWED_UPDATES,
            )
        log.info("telegram %r running as @%s (%s)", self.name, self.bot_user.username, self.config.mode)

    async def _start_webhook(self) -> None:
        assert self.application is not None
        cfg = self.config
        secret = cfg.secret_token.get_secret_value() if cfg.secret_token else secrets.token_urlsafe(32)
        self.webhook = WebhookServer(
            host=cfg.webhook_host, port=cfg.webhook_port, path=cfg.webhook_path, secret=secret,
            sink=self._feed,
        )  # fmt: skip
        await self.webhook.start()
        url = cfg.webhook_url or self.webhook.local_url
        try:
            await self.application.bot.set_webhook(
                url=url, secret_token=secret, allowed_updates=ALLOWED_UPDATES, max_connections=100
            )
        except tg.TelegramError as exc:
            await self.webhook.stop()
            raise ConfigError(
                f"Telegram refused the webhook URL {url!r}: {exc.message} (Telegram needs a public "
                "HTTPS URL on port 443, 80, 88 or 8443)",
                key=f"connectors.{self.name}.webhook_url",
            ) from None

    async def _feed(self, data: dict[str, Any]) -> None:
        """Queue one webhook update for the application (answered 200 right after)."""
        if self.application is None or not self._accepting:
            return
        try:
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # answer 200 anyway: Telegram would resend it forever
            log.warning("webhook: ignored an update that could not be read: %r", exc)
            return
        await self.application.update_queue.put(update)

    async def _publish_commands(self) -> None:
        """``setMyCommands`` from the registered commands, so the menu matches the bot."""
        assert self.application is not None and self.host is not None
        commands = []
        for command in self.host.commands:
            name = command.name
            if not (1 <= len(name) <= 32 and all(c.isascii() and (c.isalnum() or c == "_") for c in name)):
                log.debug("command /%s cannot be shown in Telegram's menu", name)
                continue
            description = (command.help or name).strip()[:256] or name
            commands.append(BotCommand(name.lower(), description))
        try:
            await self.application.bot.set_my_commands(commands[:_MAX_COMMANDS])
        except tg.TelegramError as exc:
            log.warning("telegram %r: could not publish the command menu: %s", self.name, exc.message)

    async def stop(self) -> None:
        """Stop receiving now (a pending long poll is abandoned); sending keeps working."""
        self._accepting = False
        application = self.application
        if application is None:
            return
        if application.updater is not None and application.updater.running:
            await _bounded(application.updater.stop(), 5.0, "stopping long polling")
        if self.webhook is not None:
            await self.webhook.stop()
        if application.running:
            await _bounded(application.stop(), 5.0, "stopping update processing")
        for task in list(self._tasks):
            task.cancel()  # a message still downloading was not handed over: drop it
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.host is None:
            await self.aclose()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran (the Bot API client is closed)."""
        return self._closed

    async def aclose(self) -> None:
        """Close the Bot API client (the core calls this after the schedulers finished). Idempotent."""
        if self._closed:
            return
        self._closed = True
        application = self.application
        if application is not None:
            if application.running or (application.updater is not None and application.updater.running):
                await self.stop()
            await _bounded(application.shutdown(), 5.0, "closing the Bot API client")
        await self._close_requests()

    async def _close_requests(self) -> None:
        """Close our aiohttp sessions (idempotent; PTB's own shutdown may have done it)."""
        for request in self._requests:
            await _quietly(request.shutdown())

    # ── incoming ────────────────────────────────────────────────────────────────────────────

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self._accepting:
            return
        try:
            routed = route(
                update, platform=self.name, bot=self.bot_user, trigger=self.config.group_trigger,
                admins=self._admins,
            )  # fmt: skip
        except Exception:
            log.exception("could not read a Telegram update; ignored")
            return
        if routed is None:
            return
        message = update.message
        assert self.host is not None
        if routed.image is None and routed.unsupported is None:
            self.host.deliver(routed.chat, self._incoming(routed, message))
            return
        # Never awaited here: PTB processes updates one at a time, and a download must not hold
        # up every other chat. The host starts the preparation now and keeps the chat's order.
        preparation = asyncio.ensure_future(self._with_attachment(routed, message))
        self._tasks.add(preparation)
        preparation.add_done_callback(self._tasks.discard)
        self.host.deliver(routed.chat, preparation)

    async def _with_attachment(self, routed: Routed, message: Any) -> IncomingMessage | None:
        """The message with its photo/video downloaded into the media store; ``None`` (after
        telling the user why) when it is unsupported, too big or cannot be fetched."""
        assert self.application is not None and self.host is not None
        image = routed.image
        if not self._allowed(routed, message):
            return self._incoming(routed, message)  # the core answers the denial (nothing fetched)
        if image is None:
            await self._tell(routed, routed.unsupported or "")
            return None
        max_bytes = self._max_bytes
        if image.kind == "video":
            max_bytes = min(max_bytes, self.host.config.video.max_bytes)
        ref: ImageRef | VideoRef
        try:
            data = await fetch_image(self.application.bot, image, max_bytes=max_bytes)
            if image.kind == "video":
                ref = await self.host.media.save_video(data, max_bytes=max_bytes)
            else:
                ref = await self.host.media.save(data, mime_type=image.mime_type)
        except RelaybotError as exc:
            log.info("%s: %s refused: %s", routed.chat, image.kind, exc)
            await self._tell(routed, exc.user_message)
            return None
        except tg.TelegramError as exc:
            log.warning("%s: could not download a file: %s", routed.chat, redact(exc.message))
            await self._tell(routed, f"Sorry, I couldn't download that {image.kind}. Please try again.")
            return None
        if not self._accepting:
            return None
        return self._incoming(routed, message, attachments=(ref,))

    def _allowed(self, routed: Routed, message: Any) -> bool:
        if self._hooks is None:
            return True
        return self._hooks.access.allows(self._incoming(routed, message))

    def _incoming(self, routed: Routed, message: Any, attachments: tuple[Any, ...] = ()) -> IncomingMessage:
        text = routed.text
        if routed.is_private and text.split(" ", 1)[0].lower() in ("/start", f"/start@{self._username}"):
            host = self.host
            if host is not None and host.command("start") is None and host.command("help") is not None:
                text = "/help"  # Telegram clients send /start first: show what the bot can do
        return IncomingMessage(
            chat=routed.chat, user=routed.user, text=text, attachments=attachments,
            reply_to=routed.reply_to, platform_message_id=routed.message_id,
            is_private=routed.is_private, raw=message,
        )  # fmt: skip

    @property
    def _username(self) -> str:
        return (getattr(self.bot_user, "username", "") or "").lower()

    async def _tell(self, routed: Routed, text: str) -> None:
        """A one-off answer (not-supported, too big), paced by the scheduler."""
        try:
            if self.host is not None:
                await self.host.send(routed.chat, text, private=routed.is_private, reply_to=routed.message_id)
            else:
                await self.send_text(routed.chat, text, final=True, reply_to=routed.message_id)
        except Exception as exc:
            log.warning("%s: could not answer: %s", routed.chat, redact(str(exc)))

    async def _on_handler_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.warning("telegram %r: error while handling an update: %s", self.name,
                    redact(repr(context.error)), exc_info=context.error)  # fmt: skip

    def _on_poll_error(self, exc: tg.TelegramError) -> None:
        # PTB retries with back-off; one line per failure, no traceback spam
        log.warning("telegram %r: polling failed (%s: %s); retrying", self.name,
                    type(exc).__name__, redact(exc.message))  # fmt: skip

    # ── primitives ──────────────────────────────────────────────────────────────────────────

    @property
    def bot(self) -> Any:
        if self.application is None:
            raise PlatformError(f"telegram {self.name!r} is not started")
        return self.application.bot

    async def _call(self, chat: ChatKey, request: Awaitable[Any]) -> Any:
        try:
            return await request
        except tg.TelegramError as exc:
            raise translate(exc, where=str(chat)) from None

    async def _formatted(
        self, chat: ChatKey, text: str, send: Callable[[str, list[MessageEntity] | None], Awaitable[Any]]
    ) -> Any:
        """Send a final text with entities; if Telegram refuses them, once more as plain text."""
        plain, entities = markdown_to_entities(text)
        if plain.strip() and entities:
            try:
                return await send(plain, [MessageEntity(**e) for e in entities])
            except tg.BadRequest as exc:
                if not is_entity_error(exc):
                    raise translate(exc, where=str(chat)) from None
                log.warning("%s: Telegram refused the formatting (%s); sending plain text",
                            chat, exc.message)  # fmt: skip
            except tg.TelegramError as exc:
                raise translate(exc, where=str(chat)) from None
        elif plain.strip():
            text = plain  # no entities: still drop the markup characters the converter consumed
        return await self._call(chat, send(text, None))

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """``sendMessage``: plain mid-stream, formatted when final; replies to ``reply_to``.

        An interrupted reply's final message ends with the "⏹ interrupted" paragraph.
        """
        bot = self.bot
        if final and outgoing.interrupted:
            text = mark_interrupted(text)
        kwargs: dict[str, Any] = {"chat_id": int(chat.chat), "message_thread_id": _thread(chat)}
        if reply_to:
            kwargs["reply_parameters"] = ReplyParameters(
                message_id=int(reply_to), allow_sending_without_reply=True
            )
        if final:
            sent = await self._formatted(
                chat, text, lambda t, e: bot.send_message(text=t, entities=e, **kwargs)
            )
        else:
            sent = await self._call(
                chat, bot.send_message(text=text, link_preview_options=_NO_PREVIEW, **kwargs)
            )
        return str(sent.message_id)

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """``editMessageText`` with the same plain/formatted and marker rules as :meth:`send_text`."""
        bot = self.bot
        if final and outgoing.interrupted:
            text = mark_interrupted(text)
        kwargs: dict[str, Any] = {"chat_id": int(chat.chat), "message_id": int(message_id)}
        if final:
            await self._formatted(
                chat, text, lambda t, e: bot.edit_message_text(text=t, entities=e, **kwargs)
            )
        else:
            await self._call(
                chat, bot.edit_message_text(text=text, link_preview_options=_NO_PREVIEW, **kwargs)
            )

    async def send_draft(
        self, chat: ChatKey, draft_id: int, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """``sendMessageDraft`` (private chats): an animated preview; empty = "Thinking…"."""
        await self._call(
            chat,
            self.bot.send_message_draft(
                chat_id=int(chat.chat), draft_id=draft_id, text=text or None,
                message_thread_id=_thread(chat),
            ),
        )  # fmt: skip

    async def send_typing(self, chat: ChatKey) -> None:
        """``sendChatAction(typing)`` in the chat (and topic)."""
        await self._call(
            chat,
            self.bot.send_chat_action(
                chat_id=int(chat.chat), action=ChatAction.TYPING, message_thread_id=_thread(chat)
            ),
        )

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """``deleteMessage`` (a progress notice an image replaces)."""
        await self._call(chat, self.bot.delete_message(chat_id=int(chat.chat), message_id=int(message_id)))

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """``sendPhoto`` with the caption formatted; a caption over 1024 units follows as text."""
        bot = self.bot
        plain, entities = markdown_to_entities(caption) if caption else ("", [])
        fits = utf16_len(plain) <= MAX_CAPTION
        extension = mime_type.rsplit("/", 1)[-1].replace("jpeg", "jpg") or "png"
        sent = await self._call(
            chat,
            bot.send_photo(
                chat_id=int(chat.chat), photo=image, filename=f"image.{extension}",
                caption=plain if fits and plain else None,
                caption_entities=[MessageEntity(**e) for e in entities] if fits and entities else None,
                message_thread_id=_thread(chat),
            ),
        )  # fmt: skip
        if caption and not fits:
            if self.host is not None:
                await self.host.send(chat, caption, private=not chat.chat.startswith("-"))
            else:
                await self.send_text(chat, caption, final=True)
        return str(sent.message_id)


def _thread(chat: ChatKey) -> int | None:
    return int(chat.thread) if chat.thread else None


async def _bounded(awaitable: Awaitable[Any], timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        log.warning("telegram: %s took longer than %.0fs; gave up waiting", what, timeout)
    except Exception as exc:
        log.warning("telegram: %s failed: %s", what, redact(repr(exc)))


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("ignored an error while cleaning up", exc_info=True)
