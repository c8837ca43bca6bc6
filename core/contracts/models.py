"""Platform-neutral domain types (standard library only).

These are the words every part of relaybot speaks: a connector turns a platform update into
an :class:`IncomingMessage`; the core turns stored messages into :class:`ChatMessage` items of a
:class:`ProviderRequest`; a provider answers with a stream of :data:`ProviderEvent` values.

Nothing here imports a platform SDK, a database driver or an HTTP client, so plugin authors
can build and test against these types alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal


class Role(enum.StrEnum):
    """Who wrote a message in a conversation."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class ChatKey:
    """Identifies one chat surface: a platform, a chat in it, and optionally a thread/topic.

    Two messages with equal keys share conversations, the active conversation, the streaming
    budget and the one-writer lock. ``thread`` is a forum topic (Telegram), a thread ts (Slack)
    or ``None``.
    """

    platform: str
    chat: str
    thread: str | None = None

    def __str__(self) -> str:
        return f"{self.platform}:{self.chat}" + (f":{self.thread}" if self.thread else "")


@dataclass(frozen=True, slots=True)
class User:
    """The person who sent a message, as the platform names them."""

    id: str
    name: str = ""
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image attached to a message, by reference.

    ``uri`` is where the bytes live (``media:<sha256>`` for images stored by the core's media
    path, ``file://`` or ``https://`` otherwise). Connectors download platform files into the
    media store before handing the message to the core, so providers never talk to platforms.
    """

    uri: str
    mime_type: str = "image/jpeg"
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class VideoRef:
    """A short video attached to a message, by reference (``media:<sha256>``, like images).

    ``duration`` is in seconds (``None`` when the container does not say); ``has_audio`` tells
    whether it carries a sound track (which no provider receives today). The core turns a video
    into sampled frames for vision models, or sends it whole to providers that take video
    (see :mod:`relaybot.core.modelio.video_parts`).
    """

    uri: str
    mime_type: str = "video/mp4"
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    has_audio: bool = False


@dataclass(frozen=True, slots=True)
class TextPart:
    """A run of text inside a message."""

    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image inside a message (see :class:`ImageRef`)."""

    image: ImageRef
    type: Literal["image"] = "image"


@dataclass(frozen=True, slots=True)
class VideoPart:
    """A video inside a message (see :class:`VideoRef`)."""

    video: VideoRef
    type: Literal["video"] = "video"


ContentPart = TextPart | ImagePart | VideoPart


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a person, as a connector hands it to the dispatcher.

    ``reply_to`` is the platform id of the message this one answers, if any: replying to an
    old bot message branches the conversation from it. ``platform_message_id`` lets the core
    map platform messages to stored ones.
    """

    chat: ChatKey
    user: User
    text: str
    attachments: tuple[ImageRef | VideoRef, ...] = ()
    reply_to: str | None = None
    platform_message_id: str | None = None
    is_private: bool = True
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def parts(self) -> list[ContentPart]:
        """The message as content parts: the text (if any) then each image or video."""
        parts: list[ContentPart] = []
        if self.text:
            parts.append(TextPart(self.text))
        for item in self.attachments:
            parts.append(VideoPart(item) if isinstance(item, VideoRef) else ImagePart(item))
        return parts


@dataclass(slots=True)
class ChatMessage:
    """One message of model context: a role and its content parts."""

    role: Role
    parts: list[ContentPart]

    @classmethod
    def text(cls, role: Role, text: str) -> ChatMessage:
        """Build a text-only message."""
        return cls(role, [TextPart(text)])

    @property
    def text_content(self) -> str:
        """All text parts joined (images and videos left out)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(slots=True)
class ProviderRequest:
    """What the core asks a provider for: the context, the model options and limits.

    ``system`` is kept apart from ``messages`` because providers place it differently
    (OpenAI: a first message; Anthropic: a ``system`` field; Gemini: ``systemInstruction``).
    ``options`` carries provider-specific extras (temperature, top_p …) from config or hooks.
    """

    system: str
    messages: list[ChatMessage]
    max_output_tokens: int | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: who the request is for (budgets are charged to them); never sent to the provider
    origin: RequestOrigin | None = None
    #: the core's count of the prompt's tokens (``None``: not counted); never sent either
    input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RequestOrigin:
    """Whom a provider call is made for: the chat and the user (the platform's user id).

    Set by the core on every :class:`ProviderRequest` it builds, so code around providers
    (the resilience layer's spend guard) can charge the right user, chat and platform.
    """

    chat: ChatKey
    user_id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of answer text. ``kind="refusal"`` marks text of a refusal (shown like text)."""

    text: str
    kind: Literal["text", "refusal"] = "text"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one reply. ``estimated`` is true when no provider reported it.

    ``cached_input_tokens`` is the part of ``input_tokens`` the provider read from its prompt
    cache (billed at the cheaper cached-input price); 0 when not reported.
    """

    input_tokens: int
    output_tokens: int
    estimated: bool = False
    cached_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finish:
    """The end of a provider stream.

    ``reason`` is normalised: ``stop`` (complete), ``length`` (hit the output limit),
    ``refusal``, ``content_filter``, or ``other``. ``message`` is a human-readable note for
    the user when the reason is not ``stop`` (e.g. why a reply was refused).
    """

    reason: str = "stop"
    message: str = ""


ProviderEvent = TextDelta | Usage | Finish


class ReplyStatus(enum.StrEnum):
    """Lifecycle of a stored message.

    Assistant replies are ``streaming`` while written, then ``complete``, ``interrupted``
    (stopped, cut off or saved at shutdown: the partial text is kept) or ``failed`` (the text
    is the user-safe reason). A user message is ``pending`` from the moment it is stored on
    receipt until its answer starts (it waits behind another reply, or the bot stopped
    before answering it: it is answered after the restart), then ``complete``.
    """

    STREAMING = "streaming"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    PENDING = "pending"
