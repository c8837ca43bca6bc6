"""Answering one message: store it, place it, build the context, stream the reply, save it.

The order is what makes "nothing is lost" true:

1. **on receipt** (before the dispatcher returns to the connector, shielded from
   cancellation) the user message is stored: when its turn can start at once, together with
   a placeholder reply (status *streaming*) under it, in one write (:meth:`ReplyRunner.store_placed`);
   when it must wait (see :mod:`relaybot.core.runtime.turns`), *unplaced* and ``pending``
   (:meth:`ReplyRunner.store_received`), then placed with the placeholder when its turn comes
   (:meth:`ReplyRunner.place_received`);
2. while streaming, the partial text is checkpointed at most every ``bot.checkpoint_interval``
   seconds and at the latest that long after text arrived — also when the provider then goes
   silent — (in the background: the app's :class:`~relaybot.core.runtime.checkpoints.CheckpointWriter`
   writes the checkpoints of all streaming replies in one transaction);
3. the final text, status and usage are written once at the end — also when the reply is
   interrupted (``/stop``, a new message, a switch, shutdown, the output or time cap) or fails
   (then the text is the reason the user was shown) — and is delivered;
4. the platform ids it was delivered as are linked to it (for reply-to branching).

So a reply costs three writes of its own, whatever its length (a new conversation adds its
creation; a message that had to wait adds its receipt), plus its share of one batched
checkpoint write per interval; a crash leaves the placeholder *streaming*, which start-up turns
into *interrupted* (``Store.recover_interrupted``), and a message that never got its turn
``pending``, which start-up answers.

In shared chats (groups, topics, channels, threads) every exchange is its own branch: it is
placed under the conversation's last *finished* reply without moving the conversation's leaf,
and moves the leaf to itself when it ends. Concurrent replies therefore never see each other's
half-written text, and the next message continues from the newest finished exchange (or, when
it replies to one, from that one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.errors import (
    BudgetExceededError,
    CommandError,
    ContextTooLongError,
    ProviderError,
    RelaybotError,
)
from relaybot.core.contracts.hooktypes import ReplyRecord
from relaybot.core.contracts.models import (
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
from relaybot.core.contracts.redact import redact
from relaybot.core.modelio.context import build_context, input_budget, truncation_notice
from relaybot.core.modelio.images import ImageLimits, prepared_data_url
from relaybot.core.modelio.media import MediaError
from relaybot.core.modelio.video_parts import expand_videos
from relaybot.core.runtime.turns import Turn
from relaybot.core.storage import USE_LEAF, NewMessage, StoredMessage
from relaybot.core.streaming.demand import text_demand

if TYPE_CHECKING:
    from relaybot.core.runtime.app import Relaybot
    from relaybot.core.storage import Conversation

log = logging.getLogger("relaybot.replies")

_FINISH_NOTES = {
    "length": "(The answer reached the maximum length and was cut off.)",
    "content_filter": "(The provider's content filter stopped this answer.)",
    "refusal": "(The model declined to answer this request.)",
}
#: why a reply was stopped by relaybot itself (see ``bot.max_reply_seconds`` and the output cap)
_CAP_NOTES = {
    "tokens": "(The answer was stopped: it reached the maximum length of {limit:g} tokens.)",
    "time": "(The answer was stopped: it took longer than {limit:g} seconds.)",
}
#: count the reply's tokens on our side once per this many new characters (the output cap)
_COUNT_EVERY = 1024


class _Capped(Exception):
    """The reply hit relaybot's own output-token or wall-clock cap (internal)."""

    def __init__(self, kind: str, limit: float) -> None:
        super().__init__(kind)
        self.note = _CAP_NOTES[kind].format(limit=limit)


def is_context(message: StoredMessage) -> bool:
    """True when a stored message belongs in model context.

    Failed replies (their text is the reason shown to the user) and replies stopped before
    they said anything are left out: a provider must never see them as assistant turns.
    """
    if message.role != Role.ASSISTANT:
        return True
    if message.status == ReplyStatus.FAILED:
        return False
    return bool(message.text.strip()) or any(isinstance(p, ImagePart) for p in message.parts)


class ReplyRunner:
    """Runs the reply pipeline for one incoming message (one instance per message).

    The dispatcher calls :meth:`store_placed` or :meth:`store_received` on receipt (whichever
    the message's turn allows), :meth:`place_received` when a waiting turn starts, then
    :meth:`answer`.
    """

    def __init__(
        self,
        app: Relaybot,
        message: IncomingMessage,
        stream: Any,
        turn: Turn,
        *,
        regenerate: bool = False,
    ) -> None:
        self.app = app
        self.message = message
        self.regenerate = regenerate
        self.stream = stream  # ReplyStream, opened by the dispatcher for instant feedback
        self.turn = turn
        self.chat = message.chat
        #: shared chat: the exchange is a branch that joins the conversation when it ends
        self.shared = not message.is_private
        self.text_parts: list[str] = []
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self._events: Any = None  # the provider stream (it may say which fallback answered)
        self.provider_name = app.config.default_provider
        self.provider = app.provider(self.provider_name)
        self.counter = app.token_counter(self.provider_name)
        #: set once stored: the conversation, the user's message and the reply's placeholder
        self.conversation: Conversation | None = None
        self.user_row: StoredMessage | None = None
        self.reply_row: StoredMessage | None = None
        #: (conversation id, root id) the reply becomes the leaf of when it ends (shared chats)
        self._advance: tuple[int, int] | None = None
        self._checkpoint_timer: asyncio.TimerHandle | None = None

    # ── storing ─────────────────────────────────────────────────────────────────────────────

    def _user_message(self) -> NewMessage:
        parts = self.message.parts
        return NewMessage(
            role=Role.USER,
            parts=list(parts),
            token_count=self.counter.count_message(ChatMessage(Role.USER, list(parts))),
            token_estimated=not self.counter.exact,
            user_id=self.message.user.id,
        )

    def _placeholder(self) -> NewMessage:
        return NewMessage(
            role=Role.ASSISTANT,
            parts=[TextPart("")],
            status=ReplyStatus.STREAMING,
            provider=self.provider_name,
            model=self.provider.model,
            user_id=self.message.user.id,  # whom it answered: usage is counted per user
        )

    async def store_placed(self) -> None:
        """Store the user message in its conversation with the reply's placeholder (one write)."""
        if self.regenerate:
            conversation, user_row = await self._last_user_turn()
            (reply_row,) = await self.app.store.add_messages(
                conversation.id, [self._placeholder()], parent_id=user_row.id
            )
            self.conversation, self.user_row, self.reply_row = conversation, user_row, reply_row
            self.stream.describe(conversation_id=conversation.id, reply_id=reply_row.id)
            return
        await self._place(None, with_reply=True)

    async def store_received(self) -> None:
        """Store the user message unplaced and ``pending`` (its turn must wait)."""
        if self.regenerate:
            return  # nothing new to store: the user message is in the conversation already
        self.user_row = await self.app.store.receive(
            self.chat, self._user_message(), platform_message_id=self.message.platform_message_id or None
        )

    async def place_received(self, *, with_reply: bool = True) -> None:
        """The turn starts: attach the received message where the conversation is now, with
        the reply's placeholder (``with_reply=False``: a superseded message, placed only)."""
        if self.regenerate:
            await self.store_placed()
            return
        assert self.user_row is not None
        await self._place(self.user_row.id, with_reply=with_reply)

    async def _place(self, received: int | None, *, with_reply: bool) -> None:
        store = self.app.store
        conversation, parent = await self._where_it_was() if received is not None else (None, None)
        if conversation is None:
            conversation, parent = await self._conversation()
        chain = [self._placeholder()] if with_reply else []
        title = (
            _auto_title(self.message.text) if not conversation.title and self.message.text else None
        )
        if received is None:
            chain.insert(0, self._user_message())
        rows = await store.add_messages(
            conversation.id,
            chain,
            parent_id=parent,
            platform_message_id=(self.message.platform_message_id or None) if received is None else None,
            title=title,
            place=received,
            move_leaf=not self.shared,
        )
        self.conversation = conversation
        self.user_row = rows[0]
        self.reply_row = rows[1] if with_reply else None
        self.turn.placed = (conversation.id, rows[0].id)
        self.turn.follows = None  # used: a long burst holds no chain of old turns
        if self.reply_row is not None:
            # frames from now on say which conversation and stored reply they show
            self.stream.describe(conversation_id=conversation.id, reply_id=self.reply_row.id)
        if self.shared:
            root = conversation.root_id if parent is not None and conversation.root_id else rows[0].id
            self._advance = (conversation.id, root)

    async def _where_it_was(self) -> tuple[Conversation | None, Any]:
        """A message given back at shutdown was placed already: it is answered where it is
        (re-placing it under the conversation's leaf could make it its own ancestor)."""
        row = self.user_row
        if row is None or row.conversation_id is None:
            return None, None
        conversation = await self.app.store.get_conversation(row.conversation_id)
        return conversation, row.parent_id

    async def _conversation(self) -> tuple[Conversation, Any]:
        """Where the message goes: (conversation, parent for ``add_messages``).

        Private chats: the active conversation, at its leaf — or, when the message replies to
        an older message, a new branch conversation from it, made active (the original is left
        untouched). Shared chats: the same, except that a reply to the last message of a
        branch continues that branch, and branches are not made active (the chat's other
        people stay in the conversation they were in); the parent is the conversation's leaf
        as it is now (the newest finished exchange).
        """
        store = self.app.store
        if self.message.reply_to:
            target = await store.find_by_platform_id(self.chat, self.message.reply_to)
            # an unplaced message (still waiting for its own turn) has no branch to continue yet
            if target is not None and target.status != ReplyStatus.PENDING:
                active = await store.active_conversation(self.chat)
                if active is not None and active.leaf_id == target.id:
                    return active, self._parent(active)
                if self.shared:
                    branch = await store.conversation_ending_at(self.chat, target.id)
                    if branch is not None:
                        return branch, self._parent(branch)
                # replying to an older message branches the conversation from it
                branch = await store.create_conversation(
                    self.chat, "", activate=not self.shared, branch_from=target.id
                )
                return branch, self._parent(branch)
        if self.shared:
            # a message that superseded the sender's earlier waiting one (interrupt policy)
            # goes right after it: the conversation's leaf has not moved to it (an exchange
            # moves the leaf only when its reply ends, and a superseded one has none), so
            # without this every message of a burst would hang under the same leaf, siblings,
            # and all but the last would fall off the path the answer reads
            earlier = self.turn.follows
            if earlier is not None and earlier.placed is not None:
                conversation = await store.get_conversation(earlier.placed[0])
                if conversation is not None:
                    return conversation, earlier.placed[1]
        active = await store.active_conversation(self.chat)
        if active is None:
            active = await store.create_conversation(self.chat, "", activate=True)
        return active, self._parent(active)

    def _parent(self, conversation: Conversation) -> Any:
        # private: the leaf as the write finds it; shared: the leaf read now, pinned, so that
        # the exchange's root (for advance_leaf) is known
        return conversation.leaf_id if self.shared else USE_LEAF

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

    async def close_unstarted(self) -> None:
        """Stopped before the reply began (interrupt, ``/stop``): the placeholder is closed,
        empty (it is left out of model context), and nothing is shown."""
        self.stream.cancel()
        if self.reply_row is not None:
            await _uncancellable(
                self.app.store.update_message(
                    self.reply_row.id, status=ReplyStatus.INTERRUPTED, advance_leaf=self._advance
                )
            )

    async def give_back(self) -> None:
        """Shutdown came before the answer started: the message is ``pending`` again (it is
        answered after the restart) and the placeholder is closed, empty."""
        store = self.app.store
        self.stream.cancel()
        with contextlib.suppress(Exception):
            if self.reply_row is not None:
                await _uncancellable(store.update_message(self.reply_row.id, status=ReplyStatus.INTERRUPTED))
            if self.user_row is not None and not self.regenerate:
                await _uncancellable(store.update_message(self.user_row.id, status=ReplyStatus.PENDING))

    # ── answering ───────────────────────────────────────────────────────────────────────────

    async def answer(self) -> None:
        """Answer the stored message. Cancellation keeps the partial reply, marked interrupted."""
        app = self.app
        assert self.conversation is not None and self.user_row is not None and self.reply_row is not None
        conversation, user_row, reply_row = self.conversation, self.user_row, self.reply_row
        provider_name, provider, counter = self.provider_name, self.provider, self.counter
        caps = provider.capabilities
        max_out = caps.max_output_tokens
        budget = input_budget(caps.context_window, max_out)
        try:
            if app.turns.closing:
                raise asyncio.CancelledError  # shutdown won the race: no new provider request
            request, dropped, notes, sent = await self._prepare(
                user_row.id, budget, provider_name, provider, counter
            )
        except asyncio.CancelledError:
            self.stream.cancel()
            if app.turns.closing:
                await self.give_back()
            else:
                await _uncancellable(self._save(reply_row.id, "", ReplyStatus.INTERRUPTED, counter))
            raise
        except BaseException:
            # the placeholder must not stay "streaming": nothing was asked of the provider
            with contextlib.suppress(Exception):
                await asyncio.shield(app.store.update_message(reply_row.id, status=ReplyStatus.FAILED))
            raise
        noticed = app.turns.state(self.chat).truncation_noticed
        if dropped and conversation.id not in noticed:
            noticed.add(conversation.id)
            notes.insert(0, truncation_notice(dropped))

        status = ReplyStatus.COMPLETE
        error_text = ""
        cancelled = False
        try:
            try:
                await self._stream_capped(provider, request, reply_row.id)
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
                await self._stream_capped(provider, request, reply_row.id)
            if self.finish and self.finish.reason != "stop":
                notes.append(self.finish.message or _FINISH_NOTES.get(self.finish.reason, ""))
        except asyncio.CancelledError:
            cancelled = True
            status = ReplyStatus.INTERRUPTED
        except _Capped as cap:
            log.info("reply in %s capped: %s", self.chat, cap.note)
            status = ReplyStatus.INTERRUPTED
            notes.append(cap.note)
        except ProviderError as exc:
            error_text = redact(str(exc))
            # a budget refusal is the budget working, not a failure: no ERROR line per refusal
            level = logging.INFO if isinstance(exc, BudgetExceededError) else logging.ERROR
            log.log(level, "provider %r failed in %s: %s", provider_name, self.chat, error_text)
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
        note = "\n\n".join(n for n in notes if n)
        # a failed reply keeps the reason it showed, so history and exports can say why; the
        # save completes even when the reply is cancelled again meanwhile (/stop, then a new
        # message): a reply left "streaming" would be a lie
        saved = (status == ReplyStatus.FAILED and note) or text
        cancelled = await _uncancellable(self._save(reply_row.id, saved, status, counter)) or cancelled
        delivered: tuple[str, ...] = ()
        try:
            if cancelled and not text and not note:
                # stopped before it said anything: nothing to show, nothing left behind
                self.stream.cancel()
            else:
                if status == ReplyStatus.FAILED:
                    self.stream.describe(failed=True)  # the page shows it as the error it is
                result = await self.stream.finish(interrupted=status == ReplyStatus.INTERRUPTED, note=note)
                delivered = tuple(result.message_ids)
                await app.store.link_platform_messages(self.chat, delivered, reply_row.id)
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
                error=error_text or (note if status == ReplyStatus.FAILED else ""),
                user_id=self.message.user.id,
            ),
        )
        if cancelled:
            raise asyncio.CancelledError

    # ── steps ───────────────────────────────────────────────────────────────────────────────

    #: tokens of the request as we counted them (set when it is built)
    _input_estimate: int = 0

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
            [m for m in path.messages if is_context(m)],
            counter=counter,
            context_window=budget + caps.max_output_tokens,
            max_output_tokens=caps.max_output_tokens,
        )
        if path.truncated and not draft.dropped:
            draft.dropped = 1  # storage already left older turns out
        app.plugins.transform("build_context", context=draft)
        self._input_estimate = draft.token_count  # usage estimate if the provider reports none
        # videos first: for vision models they become frames, which the image step then prepares
        notes = await expand_videos(draft.messages, app.media, caps, app.config.video)
        notes += await self._resolve_images(draft.messages, vision=caps.vision, limits=caps.image_limits)
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

    async def _stream_capped(self, provider: Any, request: ProviderRequest, reply_id: int) -> None:
        """:meth:`_stream_from` within ``bot.max_reply_seconds`` (a provider that never stops
        cannot hold a chat for ever)."""
        limit = self.app.config.bot.max_reply_seconds
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                await self._stream_from(provider, request, reply_id)
        except TimeoutError:
            if not timeout.expired():
                raise  # not our deadline
            raise _Capped("time", limit) from None

    async def _stream_from(self, provider: Any, request: ProviderRequest, reply_id: int) -> None:
        """Pump provider events into the ReplyStream, checkpointing what arrives.

        A checkpoint is written at most every ``bot.checkpoint_interval`` seconds and at the
        latest that long after text arrived (a timer, so a provider that bursts and then goes
        silent still has its text saved). The reply is capped at ``max_output_tokens`` as we
        count it (counted in chunks of ~1,000 characters, so the cost stays linear): a
        provider that ignores the limit is stopped.
        """
        append = self.stream.append
        parts = self.text_parts
        max_tokens = request.max_output_tokens or 0
        count_text = self.counter.count_text
        counted_tokens = count_text("".join(parts)) if parts else 0
        pending: list[str] = []
        pending_chars = 0
        events = provider.stream(request)
        self._events = events
        # transports that can (the HTTP providers' aiohttp one) let the socket wait while
        # this chat cannot show new text anyway: see relaybot.core.streaming.demand
        demand = text_demand.set(self.stream)
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    text = event.text
                    if not text:
                        continue
                    over = False
                    if max_tokens and pending_chars + len(text) >= _COUNT_EVERY:
                        # counted before it is shown, so a reply never shows more than the cap
                        pending.append(text)
                        tokens = count_text("".join(pending))
                        if counted_tokens + tokens > max_tokens:
                            pending.pop()
                            text = _fit(text, max_tokens - counted_tokens, pending, count_text)
                            over = True
                        counted_tokens += tokens
                        pending.clear()
                        pending_chars = 0
                    elif max_tokens:
                        pending.append(text)
                        pending_chars += len(text)
                    if text:
                        parts.append(text)
                        append(text)
                        if self._checkpoint_timer is None:
                            self._arm_checkpoint(reply_id)
                    if over:
                        raise _Capped("tokens", max_tokens)
                elif isinstance(event, Usage):
                    self.usage = event
                elif isinstance(event, Finish):
                    self.finish = event
        finally:
            text_demand.reset(demand)
            await events.aclose()

    def _arm_checkpoint(self, reply_id: int) -> None:
        """Save the partial text one checkpoint interval from now (one timer per reply)."""
        loop = asyncio.get_running_loop()
        self._checkpoint_timer = loop.call_later(
            self.app.config.bot.checkpoint_interval, self._checkpoint, reply_id
        )

    def _checkpoint(self, reply_id: int) -> None:
        """Hand the partial text to the app's checkpoint writer (written in a batch soon)."""
        self._checkpoint_timer = None
        writer = self.app.checkpoints
        assert writer is not None, "replies run only while the app is started"
        writer.submit(reply_id, "".join(self.text_parts))

    async def _save(self, reply_id: int, text: str, status: ReplyStatus, counter: Any) -> None:
        """The final write of the reply (shielded: it must land even while being cancelled)."""
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        # no older checkpoint may land after the final text
        writer = self.app.checkpoints
        assert writer is not None, "replies run only while the app is started"
        await writer.settle(reply_id)
        tokens = counter.count_message(ChatMessage.text(Role.ASSISTANT, text))
        usage = self.usage
        if usage is not None:
            # the provider's own count of the reply is better than ours
            tokens = usage.output_tokens or tokens
        elif text and status != ReplyStatus.FAILED:
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
                advance_leaf=self._advance,
            )
        )


async def _uncancellable(write: Any) -> bool:
    """Await ``write`` to the end even if the caller is cancelled (again) meanwhile; return
    whether it was (the caller re-raises the cancellation afterwards)."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    return cancelled


def _fit(text: str, budget: int, before: list[str], count: Any) -> str:
    """The longest prefix of ``text`` (cut at a space when there is one) that, after the
    uncounted ``before`` pieces, stays within ``budget`` tokens (binary search: a few counts)."""
    head = "".join(before)
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if count(head + text[:mid]) <= budget:
            low = mid
        else:
            high = mid - 1
    cut = text[:low]
    space = cut.rfind(" ")
    return cut[: space + 1] if space > 0 and low < len(text) else cut


def _auto_title(text: str, limit: int = 48) -> str:
    """A conversation title from its first message: first line, cut at a word."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return (cut or line[:limit]) + "…"
