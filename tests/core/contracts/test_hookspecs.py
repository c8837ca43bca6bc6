"""Every hook in ``core/contracts/hookspecs.py`` is documented and exercised (a datasette-style meta-test),
and the hooks no other test drives — the lifecycle pair and ``on_error`` — are driven here."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from relaybot import BotServices, CapabilityError, Command, hookimpl
from relaybot.core.contracts import hookspecs

ROOT = Path(__file__).resolve().parents[3]

#: hooks that are declared but not driven by the core yet, with the reason; the meta-test
#: fails once such a hook gains a test, so the entry is removed then
NOT_YET_EXERCISED: dict[str, str] = {}


def hook_names() -> list[str]:
    """The hooks as pluggy sees them: functions marked ``@hookspec`` in the module."""
    names = [name for name, fn in vars(hookspecs).items() if hasattr(fn, f"{hookspecs.PROJECT}_spec")]
    assert len(names) >= 10, names  # the parse found them (a broken marker check finds none)
    return sorted(names)


def implemented_in_tests() -> set[str]:
    """Hook names implemented (``def NAME`` marked ``@hookimpl``) in a test, a test plugin, or a
    built-in plugin (``plugins/``, ``connectors/``: every bot in the tests loads them)."""
    found: set[str] = set()
    for path in (p for folder in ("tests", "plugins", "connectors") for p in (ROOT / folder).rglob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue  # this module's own plugins count below, by name in a test
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "hookimpl" in ast.unparse(d) for d in node.decorator_list
            ):
                found.add(node.name)
    found |= {name for name in hook_names() if f"def {name}(" in Path(__file__).read_text(encoding="utf-8")}
    return found


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_docstring_stating_its_mode(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc.split()) >= 8, f"{name}: document what it is for and its contract"
    assert "Mode:" in doc, f"{name}: say how it is called (firstresult, all run, notification …)"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_listed_in_the_module_overview_and_the_readme(name: str) -> None:
    assert re.search(rf"\b{name}\b", hookspecs.__doc__ or ""), f"{name} missing from hookspecs' Groups"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{name}`" in readme, f"{name} missing from the README's list of hooks"


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_is_exercised_by_a_test(name: str) -> None:
    exercised = name in implemented_in_tests()
    if name in NOT_YET_EXERCISED:
        assert not exercised, f"{name} has a test now: remove it from NOT_YET_EXERCISED"
        return
    assert exercised, f"no test implements {name}: add one (a small plugin in a test, as below)"


def test_the_allow_list_names_only_real_hooks() -> None:
    assert set(NOT_YET_EXERCISED) <= set(hook_names())


# ── the hooks no other test drives ──────────────────────────────────────────────────────────


def _storage_open(bot: BotServices) -> bool:
    try:
        bot.usage  # noqa: B018 - raises CapabilityError while storage is closed
    except CapabilityError:
        return False
    return True


class LifecyclePlugin:
    """Records what the lifecycle and error hooks saw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.errors: list[tuple[BaseException, object]] = []

    @hookimpl
    def relaybot_startup(self, bot: BotServices) -> None:
        self.events.append(("startup", (_storage_open(bot), bot.config.default_provider)))

    @hookimpl
    def relaybot_shutdown(self, bot: BotServices) -> None:
        self.events.append(("shutdown", _storage_open(bot)))

    @hookimpl
    def on_error(self, error, message) -> None:  # type: ignore[no-untyped-def]
        self.errors.append((error, message))

    @hookimpl
    def register_commands(self, register) -> None:  # type: ignore[no-untyped-def]
        async def boom(ctx) -> None:  # type: ignore[no-untyped-def]
            raise RuntimeError("kaboom: internal detail")

        register(Command("boom", "always fails", boom))


async def test_startup_and_shutdown_run_once_each_around_the_bots_life(make_bot, fake_openai) -> None:
    plugin = LifecyclePlugin()
    bot = await make_bot(plugins=[("lifecycle", plugin)])
    # started: storage open and the connector running when the hook runs
    assert plugin.events == [("startup", (True, "fake"))]
    assert bot.connector.started
    await bot.say("hello")
    assert [e for e, _ in plugin.events] == ["startup"]
    await bot.stop()
    assert plugin.events[1:] == [("shutdown", True)]  # storage still open for the hook


async def test_on_error_gets_the_error_and_the_message_and_the_user_no_internals(make_bot) -> None:
    plugin = LifecyclePlugin()
    bot = await make_bot(plugins=[("lifecycle", plugin)])
    answer = await bot.say("/boom")
    assert answer.startswith("⚠️") and "kaboom" not in answer
    [(error, message)] = plugin.errors
    assert isinstance(error, RuntimeError) and "kaboom" in str(error)
    assert message.text == "/boom" and message.chat == bot.chat()
