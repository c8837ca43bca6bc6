"""Chat commands (``/new``, ``/help`` …): the types plugins register and the registry.

A plugin hands :class:`Command` objects to the ``register_commands`` hook. When a message starts
with ``/name`` (or ``/name@botname``), the dispatcher runs the command's handler with a
:class:`CommandContext` instead of asking the model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.errors import PluginError
from relaybot.core.contracts.models import IncomingMessage

if TYPE_CHECKING:
    from relaybot.core.contracts.host import BotServices
    from relaybot.core.runtime.conversations import ChatConversations

CommandHandler = Callable[["CommandContext"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Command:
    """A chat command.

    ``name`` has no leading slash and is lower case; ``usage`` shows the arguments
    (``"[title]"``); ``admin_only`` commands are refused for non-admins before the handler runs.
    ``ordered`` (the default) makes later messages of the same chat wait until the handler has
    finished, so "/new" followed at once by a question answers it in the new conversation; a
    slow command that leaves the conversation alone (drawing a picture) sets it to ``False``
    so the chat stays usable meanwhile.
    """

    name: str
    help: str
    handler: CommandHandler
    usage: str = ""
    admin_only: bool = False
    ordered: bool = True


@dataclass(slots=True)
class CommandContext:
    """What a command handler gets.

    ``reply`` sends a text answer into the chat; ``conversations`` is the conversation API of
    this chat (new, list, switch, history, export, stop …); ``registry`` the registered
    commands; ``bot`` what a plugin may use of the running bot (config, prices, providers,
    usage, sending through the scheduler …: :class:`~relaybot.core.contracts.host.BotServices`).
    """

    message: IncomingMessage
    command: str
    args: str
    reply: Callable[[str], Awaitable[Any]]
    conversations: ChatConversations
    registry: CommandRegistry
    bot: BotServices = field(repr=False)


def parse_command(text: str) -> tuple[str, str] | None:
    """Split ``"/name@bot args"`` into ``("name", "args")``; ``None`` if not a command."""
    if not text.startswith("/") or len(text) < 2:
        return None
    head, _, rest = text[1:].partition(" ")
    # "/usage-report" is "/usage_report": Telegram allows only underscores in command names
    name = head.split("@", 1)[0].strip().lower().replace("-", "_")
    if not name or not name.replace("_", "").isalnum():
        return None
    return name, rest.strip()


class CommandRegistry:
    """All registered commands, by name. Registering a name twice is an error naming both."""

    def __init__(self) -> None:
        self._commands: dict[str, tuple[Command, str]] = {}

    def register(self, command: Command, *, plugin: str = "?") -> None:
        """Add ``command`` offered by ``plugin``; raise PluginError on a duplicate name."""
        if command.name in self._commands:
            other = self._commands[command.name][1]
            raise PluginError(
                f"command /{command.name} is registered by both plugin {other!r} and {plugin!r}; "
                f"disable one of them with plugins.disabled in the config"
            )
        self._commands[command.name] = (command, plugin)

    def get(self, name: str) -> Command | None:
        """The command called ``name``, or None."""
        entry = self._commands.get(name)
        return entry[0] if entry else None

    def owner(self, name: str) -> str | None:
        """The plugin that registered ``name``."""
        entry = self._commands.get(name)
        return entry[1] if entry else None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted((c for c, _ in self._commands.values()), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)
