"""The platform-neutral streaming engine: pacing, coalescing and splitting of replies.

:class:`StreamScheduler` (one per connector) opens a :class:`ReplyStream` per reply; the
stream turns appended text into paced sends, edits, drafts, append-stream calls or images
within the connector's :class:`~relaybot.core.contracts.connector.StreamPolicy`. :mod:`.text` holds the
length counting and splitting rules on their own, for connectors and tests; :mod:`.delivery`
builds the requests of each streaming style; :mod:`.budgets` keeps per-method budgets.
"""

from relaybot.core.streaming.lane import FrameTrace, SchedulerStats
from relaybot.core.streaming.scheduler import EMPTY_REPLY_TEXT, StreamScheduler
from relaybot.core.streaming.stream import (
    INTERRUPTED_MARKER,
    ReplyResult,
    ReplyStream,
    StreamMode,
    mark_interrupted,
)
from relaybot.core.streaming.text import Fence, LengthUnit, Part, find_cut, split_text, text_length

__all__ = [
    "EMPTY_REPLY_TEXT",
    "INTERRUPTED_MARKER",
    "Fence",
    "FrameTrace",
    "LengthUnit",
    "Part",
    "ReplyResult",
    "ReplyStream",
    "SchedulerStats",
    "StreamMode",
    "StreamScheduler",
    "find_cut",
    "mark_interrupted",
    "split_text",
    "text_length",
]
