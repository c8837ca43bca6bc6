"""Settings that pick an optional, faster library: ``"auto"``, the library's name, or the
standard choice.

``uvloop`` (the event loop) and ``aiohttp`` (HTTP for providers and for python-telegram-bot)
cut the bot's CPU per reply roughly in half together, but a user may run without them (an
unusual platform, a debugging session). Each such setting accepts ``"auto"`` (use the library
when it can be imported), the library's name (use it, and fail at start-up with a clear
message when it is missing) or the alternative (never use it).
"""

from __future__ import annotations

import importlib

from relaybot.core.contracts.errors import ConfigError

__all__ = ["use_optional"]


def use_optional(choice: str, module: str, *, setting: str) -> bool:
    """Whether to use the optional ``module`` for a setting whose value is ``choice``.

    ``choice == module`` requires it (:class:`ConfigError` naming ``setting`` when it cannot be
    imported); ``"auto"`` uses it when it can be imported; anything else means no.
    """
    if choice not in ("auto", module):
        return False
    try:
        importlib.import_module(module)
    except ImportError:
        if choice == module:
            raise ConfigError(
                f'{setting} = "{module}" but {module} is not installed: pip install {module}, '
                f'or set {setting} = "auto"'
            ) from None
        return False
    return True
