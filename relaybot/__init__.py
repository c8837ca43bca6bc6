"""relaybot: put AI assistants into the chats people already use.

This module is the public API: plugin authors import everything they need from here (and the
testing kit from :mod:`relaybot.testing`). Everything else is private and may change.
"""

from relaybot.core.commands import Command, CommandContext
from relaybot.core.config import RelaybotConfig, load_config, parse_config
from relaybot.core.connector import (
    BaseConnector,
    BaseConnectorConfig,
    ConnectorType,
    MessageHandler,
    StreamPolicy,
)
from relaybot.core.context import ContextDraft
from relaybot.core.errors import (
    BudgetExceededError,
    CapabilityError,
    CommandError,
    ConfigError,
    ContextTooLongError,
    MessageGoneError,
    MessageNotModifiedError,
    PlatformError,
    PlatformRateLimitError,
    PluginError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RelaybotError,
    StorageError,
)
from relaybot.core.hookspecs import hookimpl
from relaybot.core.hooktypes import AccessDecision, ReplyRecord
from relaybot.core.jobs import Job
from relaybot.core.models import (
    ChatKey,
    ChatMessage,
    ContentPart,
    Finish,
    ImagePart,
    ImageRef,
    IncomingMessage,
    ProviderEvent,
    ProviderRequest,
    ReplyStatus,
    RequestOrigin,
    Role,
    TextDelta,
    TextPart,
    Usage,
    User,
)
from relaybot.core.optional import use_optional
from relaybot.core.pricing import ModelPrice, PriceTable, from_micros, to_micros
from relaybot.core.provider import (
    BaseProvider,
    BaseProviderConfig,
    ProviderCapabilities,
    ProviderType,
)
from relaybot.core.spending import BaseSpendGuard, CallOutcome, PlannedCall, Reservation
from relaybot.core.storage.spending import BudgetCheck, Override, Shortfall, SpendDraft

__version__ = "0.1.0"

__all__ = [
    "AccessDecision",
    "BaseConnector",
    "BaseConnectorConfig",
    "BaseProvider",
    "BaseProviderConfig",
    "BaseSpendGuard",
    "BudgetCheck",
    "BudgetExceededError",
    "CallOutcome",
    "CapabilityError",
    "ChatKey",
    "ChatMessage",
    "Command",
    "CommandContext",
    "CommandError",
    "ConfigError",
    "ConnectorType",
    "ContentPart",
    "ContextDraft",
    "ContextTooLongError",
    "Finish",
    "ImagePart",
    "ImageRef",
    "IncomingMessage",
    "Job",
    "MessageGoneError",
    "MessageHandler",
    "MessageNotModifiedError",
    "ModelPrice",
    "Override",
    "PlannedCall",
    "PlatformError",
    "PlatformRateLimitError",
    "PluginError",
    "PriceTable",
    "ProviderAuthError",
    "ProviderCapabilities",
    "ProviderError",
    "ProviderEvent",
    "ProviderNotFoundError",
    "ProviderRateLimitError",
    "ProviderRequest",
    "ProviderResponseError",
    "ProviderTimeoutError",
    "ProviderType",
    "ProviderUnavailableError",
    "RelaybotConfig",
    "RelaybotError",
    "ReplyRecord",
    "ReplyStatus",
    "RequestOrigin",
    "Reservation",
    "Role",
    "Shortfall",
    "SpendDraft",
    "StorageError",
    "StreamPolicy",
    "TextDelta",
    "TextPart",
    "Usage",
    "User",
    "from_micros",
    "hookimpl",
    "load_config",
    "parse_config",
    "to_micros",
    "use_optional",
]
