"""The platform-neutral streaming engine: pacing, coalescing and splitting of replies.

:class:`StreamScheduler` (one per connector) opens a :class:`ReplyStream` per reply; the
stream turns appended text into paced sends, edits, drafts, append-stream calls or images
within the connector's :class:`~relaybot.core.connector.StreamPolicy`. :mod:`.text` holds the
length counting and splitting rules on their own, for connectors and tests; :mod:`.delivery`
builds the requests of each streaming style; :mod:`.budgets` keeps per-method budgets.
"""

from .lane import FrameTrace, SchedulerStats
from .reply import INTERRUPTED_MARKER, ReplyResult, ReplyStream, StreamMode, mark_interrupted
from .scheduler import EMPTY_REPLY_TEXT, StreamScheduler
from .text import Fence, LengthUnit, Part, find_cut, split_text, text_length

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
