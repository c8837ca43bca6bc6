"""The connector contract: how a chat platform plugs into the core.

A connector plugin registers a :class:`ConnectorType` through the ``register_connectors``
hook. The core builds one instance per ``[connectors.NAME]`` table and calls :meth:`start`
with a :class:`~relaybot.core.contracts.host.ConnectorHost`; the connector turns platform updates into
:class:`~relaybot.core.contracts.models.IncomingMessage` values and hands each to
:meth:`ConnectorHost.deliver <relaybot.core.contracts.host.ConnectorHost.deliver>` (the core keeps each
chat's order). The host is all a connector may use of the core: it never holds the running app.

Outgoing, the connector offers a few *primitives* (send, edit, draft, typing, image, delete, and
for platforms with native append streams start/append/stop). It never decides when to call
them for a streamed reply: the core's streaming scheduler does, within the
:class:`StreamPolicy` the connector declares. Every message primitive receives an
:class:`Outgoing` descriptor saying what the message carries (which conversation and stored
reply, a reply or a notice, which part of a split reply, interrupted or not), so a connector
never has to guess.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from relaybot.core.contracts.models import ChatKey

if TYPE_CHECKING:
    from relaybot.core.contracts.host import ConnectorHost

#: What an outgoing message is: a streamed ``reply`` of the assistant, a ``notice`` of the core
#: (errors, denials, one-off texts) or the output of a ``command``
OutgoingKind = Literal["reply", "notice", "command"]
#: The request kinds the scheduler makes, as budgets name them (:class:`MethodBudget`)
Method = Literal["send", "edit", "draft", "start", "append", "stop", "image", "delete"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What an outgoing message carries: handed to every message primitive.

    ``conversation_id`` and ``reply_id`` are the stored conversation and assistant message it
    shows (``None`` when unknown or not stored, e.g. a notice). ``part`` numbers the messages
    of a reply split at the platform's length limit (0 is the first). ``interrupted`` is true
    only on the final frame of an interrupted reply's last message: its text then comes
    *without* the interruption marker and the connector renders the marker as it sees fit
    (:func:`~relaybot.core.streaming.mark_interrupted` appends the usual "⏹ interrupted"
    paragraph; the scheduler keeps room for it within ``max_length``). ``failed`` marks the
    frames of a reply that failed before it said anything: its text is the reason the user is
    shown (a connector with its own UI, like the web page, shows it as an error).
    """

    kind: OutgoingKind = "notice"
    conversation_id: int | None = None
    reply_id: int | None = None
    part: int = 0
    interrupted: bool = False
    failed: bool = False


#: the descriptor of a message nobody described (direct calls, tests)
NOTICE = Outgoing()


@dataclass(frozen=True, slots=True)
class MethodBudget:
    """At most ``limit`` requests of ``methods`` per ``per`` seconds (a sliding window).

    ``scope="connector"`` shares the budget across every chat of one budget group (see
    :meth:`BaseConnector.budget_group`: Slack counts per app per workspace), ``"chat"`` keeps
    one per chat. The scheduler waits for a send/edit/append budget; a stream whose ``start``
    budget is exhausted starts by send + edit instead (Slack: ``chat.startStream`` is Tier 2
    while ``chat.postMessage``/``chat.update`` have their own budgets).
    """

    methods: frozenset[Method]
    limit: int
    per: float = 60.0
    scope: Literal["connector", "chat"] = "connector"

    def __post_init__(self) -> None:
        if self.limit < 1 or self.per <= 0:
            raise ValueError("a MethodBudget needs limit >= 1 and per > 0")
        object.__setattr__(self, "methods", frozenset(self.methods))


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """A platform's streaming limits and abilities, as data.

    Intervals are the minimum seconds between two requests (send or edit) into one chat;
    every reply streaming in that chat shares that budget. ``global_rate`` caps requests per
    second across all chats of this connector. Admins may override these in config because
    platforms rarely publish exact numbers.
    """

    #: maximum length of one message, counted in ``length_unit``
    max_length: int = 4096
    #: "chars" (code points) or "utf16" (UTF-16 code units, as Telegram and Discord count)
    length_unit: Literal["chars", "utf16"] = "chars"
    #: minimum seconds between requests into one private chat
    private_interval: float = 1.0
    #: minimum seconds between requests into one group chat
    group_interval: float = 3.0
    #: requests per second across all chats (0 = unlimited)
    global_rate: float = 30.0
    #: the platform can edit a sent message (progressive editing)
    can_edit: bool = True
    #: the platform has native draft streaming in private chats (Telegram sendMessageDraft)
    native_draft: bool = False
    #: refresh the typing indicator every N seconds until the first frame (None: no indicator)
    typing_interval: float | None = 4.5
    #: the platform has native append streams (Slack ``chat.startStream``/``appendStream``/
    #: ``stopStream``): it receives only the text added since the last frame
    native_append: bool = False
    #: most text one start/append/stop call may carry, in ``length_unit`` (Slack: 12,000)
    append_max: int = 12_000
    #: per-method budgets on top of the per-chat intervals and ``global_rate`` (Slack's tiers)
    method_budgets: tuple[MethodBudget, ...] = ()
    #: each further message of a split reply is sent as a reply to the previous one (Discord:
    #: the parts read as one chain); otherwise only the first message replies
    chain_parts: bool = False


class BaseConnectorConfig(BaseModel):
    """Keys every ``[connectors.NAME]`` table accepts. Connector plugins subclass this."""

    model_config = ConfigDict(extra="forbid")

    #: which connector plugin serves this table; defaults to the table name
    type: str = ""
    enabled: bool = True


class BaseConnector(abc.ABC):
    """A chat platform connection.

    Primitives raise :class:`~relaybot.core.contracts.errors.PlatformRateLimitError` on 429 (with the
    platform's ``retry_after``), :class:`~relaybot.core.contracts.errors.MessageNotModifiedError` when an
    edit changes nothing, and :class:`~relaybot.core.contracts.errors.MessageGoneError` when the chat or
    message is gone. They must not retry 429s themselves: the scheduler owns pacing. A
    connector that sees the platform's rate-limit headers reports them with
    :meth:`observe_bucket`, and the scheduler keeps within them.
    """

    #: the config name (``[connectors.NAME]``); also the ``platform`` of its ChatKeys
    name: str
    policy: StreamPolicy = StreamPolicy()
    #: set by the scheduler: receives :meth:`observe_bucket` reports (``None``: nobody listens)
    bucket_observer: Callable[[ChatKey, Method, int, float], None] | None = None

    @abc.abstractmethod
    async def start(self, host: ConnectorHost) -> None:
        """Connect and start handing messages to ``host.deliver``; return once running.

        ``host`` is what the connector may use of the core (keep it): intake, notices through
        the scheduler, the registered commands, the media store, a chat's conversations, hook
        objects for its lifetime, event de-duplication. ``deliver`` returns at once (the core
        answers in background tasks).
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving and close connections. Must return even if the platform hangs."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most connectors close in stop()
        """Release clients after the last reply was delivered (called after :meth:`stop` and after
        the schedulers finished, so final "interrupted" edits can still go out). Idempotent."""

    @abc.abstractmethod
    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Send a new message and return its platform id.

        ``final=False`` marks a mid-stream frame: send it as plain/safe text that cannot fail
        on half-written Markdown. ``final=True`` may be fully formatted, and must fall back to
        plain text if the platform rejects the formatting. ``outgoing`` says what the message
        carries; on a final frame with ``outgoing.interrupted`` the connector shows that the
        reply was interrupted (``text`` does not contain a marker).
        """

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """Replace the text of a message this connector sent (same ``final``/``outgoing`` rules)."""
        raise NotImplementedError(f"{type(self).__name__} cannot edit messages")

    async def send_draft(
        self, chat: ChatKey, draft_id: int, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """Show ``text`` as an animated draft (native streaming). Empty text: a placeholder.

        Raise :class:`~relaybot.core.contracts.errors.PlatformError` when drafts are not possible in this
        chat; the scheduler then falls back to send-then-edit for this stream.
        """
        raise NotImplementedError(f"{type(self).__name__} has no drafts")

    async def start_stream(
        self, chat: ChatKey, text: str, *, reply_to: str | None = None, outgoing: Outgoing = NOTICE
    ) -> str:
        """Start a native append stream showing ``text`` (may be empty); return its message id.

        Only called with ``policy.native_append``. ``text`` is at most ``policy.append_max``
        units. Raise :class:`~relaybot.core.contracts.errors.PlatformError` when streams are not possible
        in this chat: the stream then continues by send + edit.
        """
        raise NotImplementedError(f"{type(self).__name__} has no append streams")

    async def append_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """Append ``text`` (the text added since the last call, non-empty, at most
        ``policy.append_max`` units) to a stream. Raise
        :class:`~relaybot.core.contracts.errors.StreamEndedError` when the platform ended the stream."""
        raise NotImplementedError(f"{type(self).__name__} has no append streams")

    async def stop_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """End a stream, appending ``text`` last (may be empty). The message is complete then
        (the final frame: ``outgoing.interrupted`` applies). Raise
        :class:`~relaybot.core.contracts.errors.StreamEndedError` when the platform ended it already."""
        raise NotImplementedError(f"{type(self).__name__} has no append streams")

    async def send_typing(self, chat: ChatKey) -> None:  # noqa: B027 - optional primitive
        """Show a typing indicator (best effort; errors are ignored by the caller)."""

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Send an image with an optional caption; return the platform message id.

        Called by the scheduler (paced like text: see ``ReplyStream.finish_image``).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot send images")

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """Delete a message this connector sent (a progress notice an image replaces).

        Raise :class:`~relaybot.core.contracts.errors.MessageGoneError` when it is gone already.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete messages")

    # -- helpers ---------------------------------------------------------------------------

    def budget_group(self, chat: ChatKey) -> str:
        """The group whose chats share ``scope="connector"`` method budgets (Slack: the
        workspace). Default: one group for the whole connector."""
        return ""

    def observe_bucket(self, chat: ChatKey, method: Method, *, remaining: int, reset_after: float) -> None:
        """Report the rate-limit bucket a response showed for ``method`` in ``chat`` (Discord's
        ``X-RateLimit-Remaining``/``-Reset-After``): when ``remaining`` is 0 the scheduler sends
        no further ``method`` request into the chat for ``reset_after`` seconds."""
        observer = self.bucket_observer
        if observer is not None:
            observer(chat, method, remaining, reset_after)

    @property
    def can_send_images(self) -> bool:
        """True when this connector implements :meth:`send_image`."""
        return type(self).send_image is not BaseConnector.send_image

    @property
    def can_delete(self) -> bool:
        """True when this connector implements :meth:`delete_message`."""
        return type(self).delete_message is not BaseConnector.delete_message


ConnectorFactory = Callable[[str, Any], BaseConnector]


@dataclass(frozen=True, slots=True)
class ConnectorType:
    """A kind of connector a plugin offers, selected by the ``[connectors.NAME]`` table."""

    type: str
    config_model: builtins.type[BaseConnectorConfig]
    factory: ConnectorFactory
    description: str = ""
