"""Discord's error bodies and the message limits the fake enforces.

Errors are JSON ``{"message": ..., "code": ...}`` (plus ``errors`` for 50035 "Invalid Form
Body", nested by field path as Discord does), so discord.py raises ``HTTPException`` /
``Forbidden`` / ``NotFound`` with Discord's own ``code`` and ``text``.

Lengths are counted in UTF-16 code units (as the design's platform facts state): content
2,000, embed description 4,096, title 256, field name 256 / value 1,024, 25 fields, footer
2,048, author name 256, 10 embeds, 6,000 characters per embed in total.
"""

from __future__ import annotations

import re
from typing import Any

CONTENT_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TOTAL_LIMIT = 6000
EMBEDS_PER_MESSAGE = 10


class DiscordError(Exception):
    """An error answer: HTTP ``status``, Discord's JSON ``code`` and ``message``."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The JSON body Discord sends."""
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            data["errors"] = self.errors
        return data


def unauthorized() -> DiscordError:
    return DiscordError(401, 0, "401: Unauthorized")


def missing_access() -> DiscordError:
    return DiscordError(403, 50001, "Missing Access")


def unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def already_acknowledged() -> DiscordError:
    return DiscordError(400, 40060, "Interaction has already been acknowledged.")


def cannot_edit_others() -> DiscordError:
    return DiscordError(403, 50005, "Cannot edit a message authored by another user")


def empty_message() -> DiscordError:
    return DiscordError(400, 50006, "Cannot send an empty message")


def too_large() -> DiscordError:
    return DiscordError(413, 40005, "Request entity too large")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (characters outside the BMP count twice)."""
    return len(text.encode("utf-16-le")) // 2


def _nest(path: list[str], leaf: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = leaf
    for key in reversed(path):
        out = {key: out}
    return out


def _max_length(path: list[str], limit: int) -> dict[str, Any]:
    return _nest(path, {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                      "message": f"Must be {limit} or fewer in length."}]})  # fmt: skip


def invalid_form_body(errors: dict[str, Any]) -> DiscordError:
    """50035 ``Invalid Form Body`` with Discord's nested ``errors``."""
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def _embed_text_length(embed: dict[str, Any]) -> int:
    total = sum(utf16_len(str(embed.get(k) or "")) for k in ("title", "description"))
    total += utf16_len(str((embed.get("footer") or {}).get("text") or ""))
    total += utf16_len(str((embed.get("author") or {}).get("name") or ""))
    for f in embed.get("fields") or []:
        total += utf16_len(str(f.get("name") or "")) + utf16_len(str(f.get("value") or ""))
    return total


_EMBED_FIELD_LIMITS = {"title": 256, "description": EMBED_DESCRIPTION_LIMIT}


def validate_message_body(body: dict[str, Any], *, has_files: bool, creating: bool) -> None:
    """Refuse a message create/edit body the way Discord would (raises :class:`DiscordError`).

    ``creating`` makes "nothing to show" an error (50006); an edit may change only some fields.
    """
    errors: dict[str, Any] = {}
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        content = str(content)
    if content is not None and utf16_len(content) > CONTENT_LIMIT:
        errors.update(_max_length(["content"], CONTENT_LIMIT))
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS_PER_MESSAGE:
        errors.update(_max_length(["embeds"], EMBEDS_PER_MESSAGE))
    for i, embed in enumerate(embeds):
        for key, limit in _EMBED_FIELD_LIMITS.items():
            if utf16_len(str(embed.get(key) or "")) > limit:
                errors.setdefault("embeds", {}).setdefault(str(i), {}).update(_max_length([key], limit))
        fields = embed.get("fields") or []
        if len(fields) > 25:
            errors.setdefault("embeds", {}).setdefault(str(i), {}).update(_max_length(["fields"], 25))
        if _embed_text_length(embed) > EMBED_TOTAL_LIMIT:
            errors.setdefault("embeds", {}).setdefault(str(i), {}).setdefault("_errors", []).append(
                {"code": "BASE_TYPE_MAX_LENGTH", "message": "Embed size exceeds maximum size of 6000"}
            )
    if errors:
        raise invalid_form_body(errors)
    if creating and not content and not embeds and not has_files and not body.get("sticker_ids"):
        raise empty_message()


def mentioned_ids(content: str) -> tuple[list[int], list[int], bool]:
    """The user ids, role ids and ``@everyone``/``@here`` a text mentions (before filtering)."""
    users = [int(m) for m in re.findall(r"<@!?(\d+)>", content)]
    roles = [int(m) for m in re.findall(r"<@&(\d+)>", content)]
    everyone = "@everyone" in content or "@here" in content
    return users, roles, everyone


def apply_allowed_mentions(
    content: str, allowed: dict[str, Any] | None, *, reply_author: int | None
) -> tuple[list[int], list[int], bool]:
    """Which mentions in ``content`` actually ping, given ``allowed_mentions`` (Discord's rules).

    Without ``allowed_mentions`` everything in the text pings. With it, only the ``parse``
    kinds and the listed ``users``/``roles`` do; ``replied_user`` adds the replied-to author.
    """
    users, roles, everyone = mentioned_ids(content)
    if allowed is None:
        pinged_users = users + ([reply_author] if reply_author else [])
        return pinged_users, roles, everyone
    parse = set(allowed.get("parse") or [])
    listed_users = {int(u) for u in allowed.get("users") or []}
    listed_roles = {int(r) for r in allowed.get("roles") or []}
    out_users = [u for u in users if "users" in parse or u in listed_users]
    out_roles = [r for r in roles if "roles" in parse or r in listed_roles]
    if reply_author and allowed.get("replied_user"):
        out_users.append(reply_author)
    return out_users, out_roles, everyone and "everyone" in parse
