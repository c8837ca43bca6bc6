"""What a message will cost before it is sent, and what a reply cost after it.

``POST /api/estimate`` ``{"text", "conversation_id"?}`` answers, for the conversation's context
plus ``text``, in the default provider's model::

    {"context_tokens": 1234, "max_output_tokens": 1024, "model": "gpt-4o-mini",
     "estimated": true, "input_usd": 0.000185, "max_usd": 0.000799, "priced": true,
     "prices_as_of": "2025-11-01"}

``context_tokens`` is what the provider would be sent (system prompt, the history that fits,
the new text); ``input_usd`` its price and ``max_usd`` the most the reply can cost (a full
``max_output_tokens`` answer) — what a budget reserves. ``priced`` is false when the model has
no price (then both are ``null``). After each reply the page gets a ``cost`` event with the
reply's usage and cost (:func:`reply_cost_event`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaybot import ConnectorHost, NotFoundError, ReplyRecord

from .history import valid_id
from .security import ApiError

if TYPE_CHECKING:
    from .connector import WebConnector


async def estimate(connector: WebConnector, client: str, data: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /api/estimate`` (see the module docstring)."""
    text = data.get("text", "")
    if not isinstance(text, str):
        raise ApiError(400, "text must be a string")
    conversation_id = data.get("conversation_id")
    if conversation_id is not None:
        if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
            raise ApiError(400, "conversation_id must be an integer")
        if not valid_id(conversation_id):
            raise ApiError(404, "no such conversation")
    try:
        chat = connector.chat_of(client)
        found = await connector.core.estimate(chat, text, conversation_id=conversation_id)
    except NotFoundError:
        raise ApiError(404, "no such conversation") from None
    return {
        "context_tokens": found.context_tokens,
        "max_output_tokens": found.max_output_tokens,
        "model": found.model,
        "estimated": found.estimated,
        "priced": found.input_usd is not None,
        "input_usd": found.input_usd,
        "max_usd": found.max_usd,
        "prices_as_of": found.prices_as_of,
    }


def reply_cost_event(host: ConnectorHost, reply: ReplyRecord) -> dict[str, Any] | None:
    """The ``cost`` event of a finished reply (``None`` when it used nothing)."""
    cost = host.reply_cost(reply)
    if cost is None:
        return None
    return {
        "conversation_id": reply.conversation_id,
        "reply_id": reply.message_id,
        "message_id": reply.platform_message_ids[-1] if reply.platform_message_ids else None,
        "model": cost.model,
        "input_tokens": cost.input_tokens,
        "output_tokens": cost.output_tokens,
        "estimated": cost.estimated,
        "cost_usd": cost.cost_usd,
    }
