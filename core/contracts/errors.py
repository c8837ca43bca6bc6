"""Every exception relaybot raises on purpose, in one tree.

::

    RelaybotError
    ├── ConfigError            invalid TOML, unknown key/type, missing ${ENV} secret
    ├── PluginError            a plugin failed to load, or registered a duplicate name
    ├── CapabilityError        a provider/connector cannot do what was asked
    ├── CommandError           a command was used wrongly (message is shown to the user)
    ├── StorageError           the database is unreachable, locked or unwritable
    ├── MediaError             an image or video was refused (too big, damaged) or is missing
    ├── ProviderError          a model provider failed
    │   ├── ProviderAuthError        401/403: wrong or missing API key
    │   ├── ProviderNotFoundError    404: unknown model or wrong base_url
    │   ├── ProviderRateLimitError   429 (``retry_after`` in seconds when known)
    │   ├── ProviderUnavailableError 5xx/529/overloaded, network failure
    │   ├── ProviderTimeoutError     no connection or no chunk within the timeout
    │   ├── ProviderResponseError    malformed stream / invalid JSON / mid-stream error event
    │   ├── ContextTooLongError      the prompt exceeds the model's context window
    │   └── BudgetExceededError      a spending budget has no room for the call (never retried)
    └── PlatformError          a chat platform refused a request
        ├── PlatformRateLimitError   429 with ``retry_after``; ``scope`` is "chat" or "global"
        ├── MessageNotModifiedError  an edit to identical text (callers treat it as success)
        ├── MessageGoneError         the message/chat no longer exists or the bot was removed
        └── StreamEndedError         the platform ended a native (append) stream early

Every error has ``user_message``: a short, honest sentence safe to show in a chat (no secrets,
no stack traces). ``str(error)`` is for admins and logs; secrets are redacted before logging
(see :mod:`relaybot.core.contracts.redact`).
"""

from __future__ import annotations


class RelaybotError(Exception):
    """Base of all relaybot errors."""

    user_message: str = "Sorry, something went wrong. Please try again."

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        if user_message is not None:
            self.user_message = user_message


class ConfigError(RelaybotError):
    """The configuration is invalid. The message names the file, the key path and the fix."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ""
        if path:
            where = f"{path}: "
        if key:
            where += f"[{key}] "
        super().__init__(where + message)
        self.path = path
        self.key = key


class PluginError(RelaybotError):
    """A plugin could not be loaded or registered something invalid."""


class CapabilityError(RelaybotError):
    """A provider or connector lacks a capability that was needed."""

    user_message = "This bot cannot do that with its current model or platform."


class CommandError(RelaybotError):
    """A command was used wrongly; ``str(error)`` is shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message, user_message=message)


class StorageError(RelaybotError):
    """The database could not be read or written."""

    user_message = "I can't reach my message store right now, so I can't answer. Please try again."


class MediaError(RelaybotError):
    """An image or video was refused or could not be found; ``user_message`` explains why."""

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message, user_message=user_message or message)


class ProviderError(RelaybotError):
    """A model provider failed."""

    user_message = "The AI model failed to answer. Please try again."

    def __init__(
        self,
        message: str = "",
        *,
        provider: str = "",
        status: int | None = None,
        user_message: str | None = None,
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.provider = provider
        self.status = status


class ProviderAuthError(ProviderError):
    """The provider rejected the API key (401/403)."""

    user_message = "The bot's AI provider rejected its credentials. An admin has to fix the API key."


class ProviderNotFoundError(ProviderError):
    """The provider does not know the model or the endpoint (404)."""

    user_message = "The configured AI model was not found. An admin has to fix the model name."


class ProviderRateLimitError(ProviderError):
    """The provider is rate limiting us (429)."""

    user_message = "The AI model is busy (rate limited). Please try again in a moment."

    def __init__(self, message: str = "", *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """The provider is overloaded, down or unreachable."""

    user_message = "The AI model is unavailable right now. Please try again shortly."


class ProviderTimeoutError(ProviderError):
    """The provider did not connect or stopped sending within the timeout."""

    user_message = "The AI model took too long to answer. Please try again."


class ProviderResponseError(ProviderError):
    """The provider sent something we cannot parse, or an error event mid-stream."""

    user_message = "The AI model sent a broken answer. Please try again."


class ContextTooLongError(ProviderError):
    """The prompt is longer than the model accepts."""

    user_message = "This conversation is too long for the model. Start a new one with /new."


class BudgetExceededError(ProviderError):
    """A budget has no room for the worst case of a provider call, so it was not made.

    ``budget`` names the budget ("your daily budget"), ``remaining`` says what is left in its
    unit ("$0.0123", "1,200 tokens") and ``resets`` when it frees up ("at 00:00 UTC"). The
    ``user_message`` puts the three together; it is never retried nor sent to a fallback.
    """

    user_message = "A spending budget is used up, so I can't answer right now."

    def __init__(
        self, budget: str, remaining: str, resets: str, *, provider: str = "", reason: str = ""
    ) -> None:
        # ``reason`` replaces the sentence when the budget cannot even be computed
        text = reason or f"This would go over {budget}: {remaining} left, it resets {resets}."
        super().__init__(f"budget refused a call: {text}", provider=provider, user_message=text)
        self.budget = budget
        self.remaining = remaining
        self.resets = resets


class PlatformError(RelaybotError):
    """A chat platform refused a request."""


class PlatformRateLimitError(PlatformError):
    """The platform said 429. ``scope`` is ``"chat"`` (this chat only) or ``"global"``."""

    def __init__(self, retry_after: float, *, scope: str = "chat", message: str = "") -> None:
        super().__init__(message or f"rate limited, retry after {retry_after}s")
        self.retry_after = float(retry_after)
        self.scope = scope


class MessageNotModifiedError(PlatformError):
    """An edit would not change the message. Not a failure."""


class MessageGoneError(PlatformError):
    """The message or chat is gone (deleted, bot removed, 403)."""


class StreamEndedError(PlatformError):
    """The platform ended a native append stream early (Slack's ``message_not_in_streaming_state``
    after about 5 minutes, ``stopped_by_user``). Not a failure: the scheduler finishes the
    reply by editing. ``editable`` says whether the streamed message can still be edited
    (else the rest goes into a new message)."""

    def __init__(self, message: str = "", *, editable: bool = True) -> None:
        super().__init__(message or "the platform ended the stream")
        self.editable = editable
