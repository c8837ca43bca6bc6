"""relaybot: put AI assistants into the chats people already use.

This module is the public API: plugin authors import everything they need from here (and the
testing kit from :mod:`relaybot.testing`). Everything else is private and may change.
"""

from relaybot.core.commands import Command, CommandContext
from relaybot.core.config import RelaybotConfig, load_config, parse_config
from relaybot.core.connector import (
    NOTICE,
    BaseConnector,
    BaseConnectorConfig,
    ConnectorType,
    MessageHandler,
    MethodBudget,
    Outgoing,
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
    StreamEndedError,
)
from relaybot.core.hookspecs import hookimpl
from relaybot.core.hooktypes import AccessDecision, ReplyRecord
from relaybot.core.images import ImageLimits
from relaybot.core.jobs import Job, JobContext
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
    VideoPart,
    VideoRef,
)
from relaybot.core.normalise import clean_text
from relaybot.core.optional import use_optional
from relaybot.core.plugin_settings import PluginSettings
from relaybot.core.pricing import ModelPrice, PriceTable, from_micros, to_micros
from relaybot.core.provider import (
    BaseProvider,
    BaseProviderConfig,
    GeneratedImage,
    ImageRequest,
    ProviderCapabilities,
    ProviderType,
)
from relaybot.core.spending import BaseSpendGuard, CallOutcome, PlannedCall, Reservation
from relaybot.core.storage import StoredMessage
from relaybot.core.storage.spending import BudgetCheck, Override, Shortfall, SpendDraft
from relaybot.core.streaming import INTERRUPTED_MARKER, mark_interrupted
from relaybot.core.webserver import WebServer

__version__ = "0.1.0"

__all__ = [
    "INTERRUPTED_MARKER",
    "NOTICE",
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
    "GeneratedImage",
    "ImageLimits",
    "ImagePart",
    "ImageRef",
    "ImageRequest",
    "IncomingMessage",
    "Job",
    "JobContext",
    "MessageGoneError",
    "MessageHandler",
    "MessageNotModifiedError",
    "MethodBudget",
    "ModelPrice",
    "Outgoing",
    "Override",
    "PlannedCall",
    "PlatformError",
    "PlatformRateLimitError",
    "PluginError",
    "PluginSettings",
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
    "StoredMessage",
    "StreamEndedError",
    "StreamPolicy",
    "TextDelta",
    "TextPart",
    "Usage",
    "User",
    "VideoPart",
    "VideoRef",
    "WebServer",
    "clean_text",
    "from_micros",
    "hookimpl",
    "load_config",
    "mark_interrupted",
    "parse_config",
    "to_micros",
    "use_optional",
]
