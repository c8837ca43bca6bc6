"""Plugin loading rules: isolation, strict mode, misspelled hooks, duplicate names."""

from __future__ import annotations

import logging
import types

import pytest

from relaybot import (
    AccessDecision,
    ChatKey,
    Command,
    IncomingMessage,
    PluginError,
    ProviderType,
    User,
    hookimpl,
)
from relaybot.core.runtime.plugins import PluginHost
from relaybot.plugins.providers.openai import OpenAIConfig, OpenAIProvider


async def noop(ctx) -> None:
    return None


def plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def test_builtins_load_through_entry_points() -> None:
    host = PluginHost()
    host.load_entrypoints()
    host.check()
    regs = host.collect()
    assert {"openai", "llama_cpp", "conversation_commands", "terminal"} <= set(host.plugin_names())
    assert {"openai", "llama_cpp"} <= set(regs.providers)
    assert regs.providers["openai"][1] == "openai"
    assert {"new", "list", "switch", "stop", "help"} <= {c.name for c in regs.commands}
    assert "command /new" in regs.by_plugin("conversation_commands")


def test_a_plugin_whose_hook_raises_is_skipped_and_logged(caplog) -> None:
    def broken(register):
        raise RuntimeError("boom")

    host = PluginHost(strict=False)
    host.register(plugin(register_commands=broken), "broken")
    host.register(plugin(register_commands=lambda register: register(Command("ok", "fine", noop))), "good")
    with caplog.at_level(logging.ERROR):
        regs = host.collect()
    assert regs.commands.get("ok") is not None
    assert "broken" in host.failed and "boom" in host.failed["broken"]
    assert "plugin 'broken' skipped" in caplog.text


def test_strict_mode_re_raises(monkeypatch) -> None:
    monkeypatch.setenv("RELAYBOT_STRICT_PLUGINS", "1")
    host = PluginHost()
    host.register(plugin(register_commands=lambda register: 1 / 0), "broken")
    with pytest.raises(PluginError, match="broken"):
        host.collect()


def test_misspelled_hook_is_a_start_up_error() -> None:
    host = PluginHost()
    host.register(plugin(register_comands=lambda register: None), "typo")
    with pytest.raises(PluginError, match=r"typo.*register_comands"):
        host.check()


def test_duplicate_names_name_both_plugins() -> None:
    host = PluginHost()
    host.register(plugin(register_commands=lambda register: register(Command("x", "a", noop))), "first")
    host.register(plugin(register_commands=lambda register: register(Command("x", "b", noop))), "second")
    with pytest.raises(PluginError, match=r"/x is registered by both plugin '\w+' and '\w+'"):
        host.collect()

    host = PluginHost()
    offer = ProviderType("openai", OpenAIConfig, OpenAIProvider)
    host.register(plugin(register_providers=lambda register: register(offer)), "one")
    host.register(plugin(register_providers=lambda register: register(offer)), "two")
    with pytest.raises(PluginError, match="provider type 'openai' is registered by both"):
        host.collect()


def test_wrong_object_type_is_refused() -> None:
    host = PluginHost()
    host.register(plugin(register_commands=lambda register: register("not a command")), "bad")
    with pytest.raises(PluginError, match="expected a Command"):
        host.collect()


def test_disabled_plugins_are_not_loaded() -> None:
    host = PluginHost(disabled=["conversation_commands"])
    host.load_entrypoints()
    assert "conversation_commands" not in host.plugin_names()
    assert host.collect().commands.get("new") is None


def test_notify_isolates_each_plugin(caplog) -> None:
    seen = []
    host = PluginHost()
    host.register(plugin(after_reply=lambda reply: 1 / 0), "crashes")
    host.register(plugin(after_reply=lambda reply: seen.append(reply)), "works")
    with caplog.at_level(logging.ERROR):
        host.notify("after_reply", reply="r")
    assert seen == ["r"] and "crashes" in caplog.text


# ── check_access runs isolated, like every per-message hook ─────────────────────────────────


class BrokenAccess:
    @hookimpl
    def check_access(self, message):
        raise RuntimeError("access list unreachable")


class DenyMallory:
    @hookimpl
    def check_access(self, message):
        return AccessDecision.deny("You are not on the list.") if message.user.id == "mallory" else None


async def test_a_raising_access_plugin_is_logged_and_skipped(make_bot, fake_openai, caplog) -> None:
    fake_openai.add_reply("answered anyway")
    # registered last, so called first: its failure must not hide the next plugin's decision
    bot = await make_bot(plugins=[("deny", DenyMallory()), ("broken", BrokenAccess())])
    with caplog.at_level(logging.ERROR):
        assert await bot.say("hi") == "answered anyway"
        assert await bot.say("hi", user="mallory") == "You are not on the list."
    assert "'broken' failed in check_access" in caplog.text
    assert "went wrong" not in caplog.text


def test_first_result_returns_the_first_answer_and_skips_failures(caplog) -> None:
    host = PluginHost()
    host.register(DenyMallory(), "deny")
    host.register(BrokenAccess(), "broken")

    message = IncomingMessage(chat=ChatKey("test", "c"), user=User("mallory", "test"), text="hi")
    with caplog.at_level(logging.ERROR):
        decision = host.first_result("check_access", message=message)
    assert decision == AccessDecision.deny("You are not on the list.")
    assert "broken" in caplog.text


# ── hook wrappers are refused, never silently dropped ───────────────────────────────────────


class Wrapper:
    @hookimpl(wrapper=True)
    def build_context(self, context):
        yield


class OldWrapper:
    @hookimpl(hookwrapper=True)
    def after_reply(self, reply):
        yield


@pytest.mark.parametrize("wrapper", [Wrapper(), OldWrapper()])
def test_hook_wrappers_are_refused_at_start_up(wrapper) -> None:
    host = PluginHost()
    host.register(wrapper, "wrapping")
    with pytest.raises(PluginError) as err:
        host.check()
    message = str(err.value)
    assert "'wrapping'" in message and "hook wrapper" in message and "plain @hookimpl" in message


async def test_a_bot_with_a_wrapper_plugin_does_not_start(make_bot) -> None:
    with pytest.raises(PluginError, match="hook wrapper"):
        await make_bot(plugins=[("wrapping", Wrapper())])
