"""relaybot: put AI assistants into the chats people already use.

This module is the public API: plugin authors import everything they need from here (and the
testing kit from :mod:`relaybot.testing`). Everything else is private and may change.
"""

from relaybot.core.cli.config import RelaybotConfig, load_config, parse_config
from relaybot.core.contracts.commands import Command, CommandContext
from relaybot.core.contracts.connector import (
    NOTICE,
    BaseConnector,
    BaseConnectorConfig,
    ConnectorType,
    MethodBudget,
    Outgoing,
    StreamPolicy,
)
from relaybot.core.contracts.errors import (
    BudgetExceededError,
    CapabilityError,
    CommandError,
    ConfigError,
    ContextTooLongError,
    MediaError,
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
from relaybot.core.contracts.hookspecs import hookimpl
from relaybot.core.contracts.hooktypes import AccessDecision, ReplyRecord
from relaybot.core.contracts.host import (
    BotServices,
    ConnectorHost,
    CostEstimate,
    Handover,
    ReplyCost,
    SpendLedger,
    UsageLedger,
)
from relaybot.core.contracts.jobs import Job, JobContext
from relaybot.core.contracts.models import (
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
from relaybot.core.contracts.normalise import clean_text
from relaybot.core.contracts.optional import use_optional
from relaybot.core.contracts.plugin_settings import PluginSettings
from relaybot.core.contracts.provider import (
    BaseProvider,
    BaseProviderConfig,
    GeneratedImage,
    ImageRequest,
    ProviderCapabilities,
    ProviderType,
)
from relaybot.core.contracts.redact import redact, register_secret
from relaybot.core.contracts.spending import BaseSpendGuard, CallOutcome, PlannedCall, Reservation
from relaybot.core.modelio.context import ContextDraft
from relaybot.core.modelio.images import (
    ANTHROPIC_IMAGE_LIMITS,
    GEMINI_IMAGE_LIMITS,
    OPENAI_IMAGE_LIMITS,
    ImageLimits,
)
from relaybot.core.modelio.media import MediaStore
from relaybot.core.modelio.pricing import ModelPrice, PriceConfig, PriceTable, from_micros, to_micros
from relaybot.core.modelio.tokens import TokenCounter
from relaybot.core.runtime.conversations import ChatConversations, HistoryPage
from relaybot.core.runtime.webserver import WebServer
from relaybot.core.storage import Conversation, NotFoundError, StoredMessage
from relaybot.core.storage.spending import BudgetCheck, Override, Shortfall, SpendDraft
from relaybot.core.streaming import INTERRUPTED_MARKER, ReplyResult, ReplyStream, mark_interrupted

__version__ = "0.1.0"

__all__ = [
    "ANTHROPIC_IMAGE_LIMITS",
    "GEMINI_IMAGE_LIMITS",
    "INTERRUPTED_MARKER",
    "NOTICE",
    "OPENAI_IMAGE_LIMITS",
    "AccessDecision",
    "BaseConnector",
    "BaseConnectorConfig",
    "BaseProvider",
    "BaseProviderConfig",
    "BaseSpendGuard",
    "BotServices",
    "BudgetCheck",
    "BudgetExceededError",
    "CallOutcome",
    "CapabilityError",
    "ChatConversations",
    "ChatKey",
    "ChatMessage",
    "Command",
    "CommandContext",
    "CommandError",
    "ConfigError",
    "ConnectorHost",
    "ConnectorType",
    "ContentPart",
    "ContextDraft",
    "ContextTooLongError",
    "Conversation",
    "CostEstimate",
    "Finish",
    "GeneratedImage",
    "Handover",
    "HistoryPage",
    "ImageLimits",
    "ImagePart",
    "ImageRef",
    "ImageRequest",
    "IncomingMessage",
    "Job",
    "JobContext",
    "MediaError",
    "MediaStore",
    "MessageGoneError",
    "MessageNotModifiedError",
    "MethodBudget",
    "ModelPrice",
    "NotFoundError",
    "Outgoing",
    "Override",
    "PlannedCall",
    "PlatformError",
    "PlatformRateLimitError",
    "PluginError",
    "PluginSettings",
    "PriceConfig",
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
    "ReplyCost",
    "ReplyRecord",
    "ReplyResult",
    "ReplyStatus",
    "ReplyStream",
    "RequestOrigin",
    "Reservation",
    "Role",
    "Shortfall",
    "SpendDraft",
    "SpendLedger",
    "StorageError",
    "StoredMessage",
    "StreamEndedError",
    "StreamPolicy",
    "TextDelta",
    "TextPart",
    "TokenCounter",
    "Usage",
    "UsageLedger",
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
    "redact",
    "register_secret",
    "to_micros",
    "use_optional",
]
