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

from relaybot.core.context import input_budget
from relaybot.core.hooktypes import ReplyRecord
from relaybot.core.models import ChatMessage, Role, TextPart, Usage

from .history import owned_conversation
from .security import ApiError

if TYPE_CHECKING:
    from .connector import WebConnector

#: per-message framing the context builder counts too (see relaybot.core.tokens)
_REPLY_PRIMING = 3


def _price(app: Any, provider: str, model: str) -> Any:
    return app.prices.for_call(app.config.provider_type(provider), model)


async def estimate(connector: WebConnector, client: str, data: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /api/estimate`` (see the module docstring)."""
    text = data.get("text", "")
    if not isinstance(text, str):
        raise ApiError(400, "text must be a string")
    app = connector.app
    name = app.config.default_provider
    provider = app.provider(name)
    counter = app.token_counter(name)
    caps = provider.capabilities
    conversation_id = data.get("conversation_id")
    leaf = None
    if conversation_id is not None:
        if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
            raise ApiError(400, "conversation_id must be an integer")
        leaf = (await owned_conversation(connector, client, conversation_id)).leaf_id
    else:
        active = await app.store.active_conversation(connector.chat_of(client))
        leaf = active.leaf_id if active is not None else None
    tokens = counter.count_text(app.config.bot.system_prompt) + _REPLY_PRIMING
    budget = input_budget(caps.context_window, caps.max_output_tokens)
    if text:
        tokens += counter.count_message(ChatMessage(Role.USER, [TextPart(text)]))
    if leaf is not None:
        # the stored counts of the history that fits, newest first (as the context builder does)
        for message in reversed((await app.store.path(leaf, token_budget=budget)).messages):
            if tokens + message.token_count > budget:
                break
            tokens += message.token_count
    price = _price(app, name, provider.model)
    max_out = caps.max_output_tokens
    return {
        "context_tokens": tokens,
        "max_output_tokens": max_out,
        "model": provider.model,
        "estimated": not counter.exact,
        "priced": price is not None,
        "input_usd": None if price is None else price.worst_case(tokens, 0),
        "max_usd": None if price is None else price.worst_case(tokens, max_out),
        "prices_as_of": app.prices.as_of,
    }


def reply_cost_event(app: Any, reply: ReplyRecord) -> dict[str, Any] | None:
    """The ``cost`` event of a finished reply (``None`` when it used nothing)."""
    usage: Usage | None = reply.usage
    if usage is None:
        return None
    price = _price(app, reply.provider, reply.model)
    return {
        "conversation_id": reply.conversation_id,
        "reply_id": reply.message_id,
        "message_id": reply.platform_message_ids[-1] if reply.platform_message_ids else None,
        "model": reply.model,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "estimated": usage.estimated,
        "cost_usd": None if price is None else price.cost(usage),
    }
