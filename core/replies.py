"""Answering one message: store it, build the context, stream the provider's reply, save it.

The order is what makes "nothing is lost" true:

1. the user message and a placeholder reply (status *streaming*) under it are stored in one
   transaction before the context is built and the provider is called;
2. while streaming, the partial text is checkpointed every ``bot.checkpoint_interval`` seconds
   (in the background: the app's :class:`~relaybot.core.checkpoints.CheckpointWriter` writes
   the checkpoints of all streaming replies in one transaction);
3. the final text, status and usage are written once at the end — also when the reply is
   interrupted (``/stop``, a new message, a switch, shutdown) or fails — and is delivered;
4. the platform ids it was delivered as are linked to it (for reply-to branching).

So a reply costs three writes of its own, whatever its length (a new conversation adds its
creation), plus its share of one batched checkpoint write per interval; a crash leaves the
placeholder *streaming*, which start-up turns into *interrupted* (``Store.recover_interrupted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .context import build_context, input_budget, truncation_notice
from .errors import CommandError, ContextTooLongError, ProviderError, RelaybotError
from .hooktypes import ReplyRecord
from .images import ImageLimits, prepared_data_url
from .media import MediaError
from .models import (
    ChatMessage,
    ContentPart,
    Finish,
    ImagePart,
    IncomingMessage,
    ProviderRequest,
    ReplyStatus,
    RequestOrigin,
    Role,
    TextDelta,
    TextPart,
    Usage,
)
from .redact import redact
from .storage import NewMessage
from .streaming.demand import text_demand

if TYPE_CHECKING:
    from .app import Relaybot
    from .storage import Conversation

log = logging.getLogger("relaybot.replies")

_FINISH_NOTES = {
    "length": "(The answer reached the maximum length and was cut off.)",
    "content_filter": "(The provider's content filter stopped this answer.)",
    "refusal": "(The model declined to answer this request.)",
}


class ReplyRunner:
    """Runs the reply pipeline for one incoming message (one instance per message)."""

    def __init__(
        self, app: Relaybot, message: IncomingMessage, stream: Any, *, regenerate: bool = False
    ) -> None:
        self.app = app
        self.message = message
        self.regenerate = regenerate
        self.stream = stream  # ReplyStream, opened by the dispatcher for instant feedback
        self.chat = message.chat
        self.text_parts: list[str] = []
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self._events: Any = None  # the provider stream (it may say which fallback answered)

    async def run(self) -> None:
        """Answer the message. Cancellation keeps the partial reply, marked interrupted."""
        app = self.app
        store = app.store
        provider_name = app.config.default_provider
        provider = app.provider(provider_name)
        counter = app.token_counter(provider_name)
        caps = provider.capabilities

        placeholder = NewMessage(
            role=Role.ASSISTANT,
            parts=[TextPart("")],
            status=ReplyStatus.STREAMING,
            provider=provider_name,
            model=provider.model,
            user_id=self.message.user.id,  # whom it answered: usage is counted per user
        )
        if self.regenerate:
            conversation, user_row = await self._last_user_turn()
            (reply_row,) = await store.add_messages(conversation.id, [placeholder], parent_id=user_row.id)
        else:
            conversation = await self._conversation()
            user_parts = self.message.parts
            user_tokens = counter.count_message(ChatMessage(Role.USER, list(user_parts)))
            # One write: the user's message (linked to its platform id), the reply's
            # placeholder under it, and the conversation's title on its first message.
            user_row, reply_row = await store.add_messages(
                conversation.id,
                [
                    NewMessage(
                        role=Role.USER,
                        parts=list(user_parts),
                        token_count=user_tokens,
                        token_estimated=not counter.exact,
                        user_id=self.message.user.id,
                    ),
                    placeholder,
                ],
                parent_id=self._parent_id,
                platform_message_id=self.message.platform_message_id or None,
                title=_auto_title(self.message.text)
                if not conversation.title and self.message.text
                else None,
            )

        max_out = caps.max_output_tokens
        budget = input_budget(caps.context_window, max_out)
        try:
            request, dropped, notes, sent = await self._prepare(
                user_row.id, budget, provider_name, provider, counter
            )
        except BaseException:
            # the placeholder must not stay "streaming": nothing was asked of the provider
            with contextlib.suppress(Exception):
                await asyncio.shield(store.update_message(reply_row.id, status=ReplyStatus.FAILED))
            raise
        noticed = app.conversations.state(self.chat).truncation_noticed
        if dropped and conversation.id not in noticed:
            noticed.add(conversation.id)
            notes.insert(0, truncation_notice(dropped))

        status = ReplyStatus.COMPLETE
        error_text = ""
        cancelled = False
        try:
            try:
                await self._stream_from(provider, request, reply_row.id)
            except ContextTooLongError:
                if self.text_parts:
                    raise
                # our counts were too optimistic (estimates, template overhead): trim harder, once
                log.info(
                    "context too long for %r in %s; retrying with half the budget", provider_name, self.chat
                )
                # half of what was actually sent: the window in config may be wrong too
                request, dropped, _, _ = await self._prepare(
                    user_row.id, max(1, min(budget, sent) // 2), provider_name, provider, counter
                )
                if dropped and conversation.id not in noticed:
                    noticed.add(conversation.id)
                    notes.insert(0, truncation_notice(dropped))
                await self._stream_from(provider, request, reply_row.id)
            if self.finish and self.finish.reason != "stop":
                notes.append(self.finish.message or _FINISH_NOTES.get(self.finish.reason, ""))
        except asyncio.CancelledError:
            cancelled = True
            status = ReplyStatus.INTERRUPTED
        except ProviderError as exc:
            error_text = redact(str(exc))
            log.error("provider %r failed in %s: %s", provider_name, self.chat, error_text)
            status = ReplyStatus.INTERRUPTED if self.text_parts else ReplyStatus.FAILED
            notes.append(("⚠️ The answer was cut off: " if self.text_parts else "⚠️ ") + exc.user_message)
        except Exception as exc:
            error_text = redact(f"{type(exc).__name__}: {exc}")
            log.exception("reply failed in %s", self.chat)
            app.plugins.notify("on_error", error=exc, message=self.message)
            status = ReplyStatus.INTERRUPTED if self.text_parts else ReplyStatus.FAILED
            notes.append("⚠️ " + RelaybotError.user_message)

        notes.extend(getattr(self._events, "notes", ()))  # e.g. a budget downgrade
        text = "".join(self.text_parts)
        await self._save(reply_row.id, text, status, counter)
        delivered: tuple[str, ...] = ()
        try:
            result = await self.stream.finish(
                interrupted=status == ReplyStatus.INTERRUPTED, note="\n\n".join(n for n in notes if n)
            )
            delivered = tuple(result.message_ids)
            await store.link_platform_messages(self.chat, delivered, reply_row.id)
        except asyncio.CancelledError:
            # cancelled a second time (shutdown after /stop): the reply is saved already; only
            # its platform ids (used for reply-to branching) may be missing
            cancelled = True
        except Exception:
            log.exception("could not deliver the reply in %s (it is saved)", self.chat)
        app.plugins.notify(
            "after_reply",
            reply=ReplyRecord(
                chat=self.chat,
                conversation_id=conversation.id,
                message_id=reply_row.id,
                text=text,
                status=status,
                usage=self.usage,
                provider=provider_name,
                model=provider.model,
                platform_message_ids=delivered,
                error=error_text,
            ),
        )
        if cancelled:
            raise asyncio.CancelledError

    # ── steps ───────────────────────────────────────────────────────────────────────────────

    _parent_id: Any = None
    #: tokens of the request as we counted them (set when it is built)
    _input_estimate: int = 0

    async def _conversation(self) -> Conversation:
        """The conversation to answer in: the active one, or a branch when replying to an old one."""
        store = self.app.store
        from .storage import USE_LEAF

        self._parent_id = USE_LEAF
        if self.message.reply_to:
            target = await store.find_by_platform_id(self.chat, self.message.reply_to)
            if target is not None:
                active = await store.active_conversation(self.chat)
                if active is None or active.leaf_id != target.id:
                    # replying to an older message branches the conversation from it
                    return await store.create_conversation(
                        self.chat, "", activate=True, branch_from=target.id
                    )
        active = await store.active_conversation(self.chat)
        if active is None:
            active = await store.create_conversation(self.chat, "", activate=True)
        return active

    async def _prepare(
        self, leaf_id: int, budget: int, provider_name: str, provider: Any, counter: Any
    ) -> tuple[ProviderRequest, int, list[str], int]:
        """Build the provider request from the conversation path ending at ``leaf_id``.

        Returns the request, how many older messages were left out, notes for the user
        (e.g. images a text-only model could not see) and the request's token count. Runs the
        ``build_context`` and ``before_provider_request`` hooks.
        """
        app = self.app
        caps = provider.capabilities
        path = await app.store.path(leaf_id, token_budget=budget)
        draft = build_context(
            self.chat,
            self.message,
            app.config.bot.system_prompt,
            path.messages,
            counter=counter,
            context_window=budget + caps.max_output_tokens,
            max_output_tokens=caps.max_output_tokens,
        )
        if path.truncated and not draft.dropped:
            draft.dropped = 1  # storage already left older turns out
        app.plugins.transform("build_context", context=draft)
        self._input_estimate = draft.token_count  # usage estimate if the provider reports none
        notes = await self._resolve_images(draft.messages, vision=caps.vision, limits=caps.image_limits)
        request = ProviderRequest(
            system=draft.system,
            messages=draft.messages,
            max_output_tokens=caps.max_output_tokens,
            # no model pinned: each provider of a fallback chain sends its own
            model=None,
            origin=RequestOrigin(self.chat, self.message.user.id),
            input_tokens=draft.token_count,
        )
        app.plugins.transform(
            "before_provider_request", request=request, provider=provider_name, message=self.message
        )
        return request, draft.dropped, notes, draft.token_count

    async def _last_user_turn(self) -> tuple[Conversation, Any]:
        """For regenerate: the active conversation and the user message to answer again."""
        store = self.app.store
        conversation = await store.active_conversation(self.chat)
        leaf = None
        if conversation is not None and conversation.leaf_id is not None:
            leaf = await store.get_message(conversation.leaf_id)
        if leaf is not None and leaf.role == Role.ASSISTANT and leaf.parent_id is not None:
            leaf = await store.get_message(leaf.parent_id)
        if conversation is None or leaf is None or leaf.role != Role.USER:
            raise CommandError("There is no message to answer again yet.")
        return conversation, leaf

    async def _resolve_images(
        self, messages: list[ChatMessage], *, vision: bool, limits: ImageLimits | None = None
    ) -> list[str]:
        """Turn stored ``media:`` images into ``data:`` URLs for the provider (in place).

        With ``limits`` (the provider's :attr:`ProviderCapabilities.image_limits`) each image
        is first oriented, converted, resized and compressed to fit them (done in a worker
        thread, cached beside the media file so later turns reuse it); without, the stored
        bytes are sent as they are. A model without vision gets a short text note instead of
        each image, and the user is told once per reply; so is an image that could not be
        loaded or prepared. Images in assistant messages (generated ones) become a text
        marker: the chat APIs accept images in user turns only. Returns the notes to show.
        """
        notes: list[str] = []

        def note(text: str) -> None:
            if text not in notes:
                notes.append(text)

        for message in messages:
            if not any(isinstance(p, ImagePart) for p in message.parts):
                continue
            parts: list[ContentPart] = []
            for part in message.parts:
                if not isinstance(part, ImagePart):
                    parts.append(part)
                elif message.role == Role.ASSISTANT:
                    # a picture the bot made (/imagine): chat APIs take images in user turns
                    # only, so the model reads that it showed one (its caption follows)
                    parts.append(TextPart("[generated image] "))
                elif not vision:
                    parts.append(TextPart("[an image was attached here, but this model cannot see images]"))
                    note("(This model cannot see images, so I answered from the text only.)")
                elif part.image.uri.startswith("media:"):
                    try:
                        if limits is None:
                            image = replace(part.image, uri=await self.app.media.data_url(part.image))
                        else:
                            _, image = await prepared_data_url(self.app.media, part.image, limits)
                    except MediaError as exc:
                        log.warning("image %s left out of the request: %s", part.image.uri[:18], exc)
                        parts.append(TextPart(f"[image unavailable: {exc.user_message}]"))
                        note(f"(An image could not be sent to the model: {exc.user_message})")
                        continue
                    parts.append(ImagePart(image))
                else:
                    parts.append(part)
            message.parts = parts
        return notes

    async def _stream_from(self, provider: Any, request: ProviderRequest, reply_id: int) -> None:
        """Pump provider events into the ReplyStream, checkpointing now and then."""
        interval = self.app.config.bot.checkpoint_interval
        next_checkpoint = time.monotonic() + interval
        append = self.stream.append
        parts = self.text_parts
        events = provider.stream(request)
        self._events = events
        # transports that can (the HTTP providers' aiohttp one) let the socket wait while
        # this chat cannot show new text anyway: see relaybot.core.streaming.demand
        demand = text_demand.set(self.stream)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    if event.text:
                        parts.append(event.text)
                        append(event.text)
                        now = time.monotonic()
                        if now >= next_checkpoint:
                            next_checkpoint = now + interval
                            self._checkpoint(reply_id)
                elif isinstance(event, Usage):
                    self.usage = event
                elif isinstance(event, Finish):
                    self.finish = event
        finally:
            text_demand.reset(demand)
            await events.aclose()

    def _checkpoint(self, reply_id: int) -> None:
        """Hand the partial text to the app's checkpoint writer (written in a batch soon)."""
        self.app.checkpoints.submit(reply_id, "".join(self.text_parts))

    async def _save(self, reply_id: int, text: str, status: ReplyStatus, counter: Any) -> None:
        """The final write of the reply (shielded: it must land even while being cancelled)."""
        # no older checkpoint may land after the final text
        await self.app.checkpoints.settle(reply_id)
        tokens = counter.count_message(ChatMessage.text(Role.ASSISTANT, text))
        usage = self.usage
        if usage is not None:
            # the provider's own count of the reply is better than ours
            tokens = usage.output_tokens or tokens
        elif text:
            # no usage reported (a provider without it, or the reply was interrupted): record
            # our own counts, flagged, so usage accounting sees every answered request
            usage = Usage(self._input_estimate, tokens, estimated=True)
        # with fallbacks, the provider that actually answered may not be the configured one
        answered_by = getattr(self._events, "answered_by", None)
        answered_model = getattr(self._events, "answered_model", None)
        await asyncio.shield(
            self.app.store.update_message(
                reply_id,
                provider=answered_by,
                model=answered_model,
                text=text,
                status=status,
                usage=usage,
                token_count=tokens,
                token_estimated=self.usage is None and not counter.exact,
            )
        )


def _auto_title(text: str, limit: int = 48) -> str:
    """A conversation title from its first message: first line, cut at a word."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return (cut or line[:limit]) + "…"
