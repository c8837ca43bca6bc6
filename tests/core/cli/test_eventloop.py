"""Choosing the event loop (uvloop by default) and other optional, faster libraries."""

from __future__ import annotations

import asyncio

import pytest

from relaybot import ConfigError, use_optional
from relaybot.core.cli import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("RELAYBOT_EVENT_LOOP", raising=False)
    assert eventloop.run(_loop_module()).startswith("uvloop")
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_environment_overrides_the_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELAYBOT_EVENT_LOOP", "asyncio")
    assert eventloop.run(_loop_module(), "uvloop").startswith("asyncio")
    monkeypatch.setenv("RELAYBOT_EVENT_LOOP", "tokio")
    coro = _loop_module()
    with pytest.raises(ConfigError, match="RELAYBOT_EVENT_LOOP='tokio': use auto, uvloop or asyncio"):
        eventloop.run(coro)


def test_use_optional_auto_explicit_and_missing():
    assert use_optional("auto", "json", setting="x") is True
    assert use_optional("httpx", "aiohttp", setting="http_client") is False
    assert use_optional("auto", "relaybot_no_such_module", setting="x") is False
    with pytest.raises(ConfigError) as info:
        use_optional("relaybot_no_such_module", "relaybot_no_such_module", setting="http_client")
    assert "pip install relaybot_no_such_module" in str(info.value)
    assert 'http_client = "auto"' in str(info.value)


def test_run_lowers_the_gil_switch_interval_unless_already_changed():
    import sys

    from relaybot.core.cli import eventloop

    async def main() -> float:
        return sys.getswitchinterval()

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # CPython's default
        assert eventloop.run(main(), "asyncio") == eventloop.SWITCH_INTERVAL
        sys.setswitchinterval(0.002)  # the embedding program chose its own
        assert eventloop.run(main(), "asyncio") == 0.002
        sys.setswitchinterval(0.005)
        assert eventloop.run(main(), "asyncio", switch_interval=None) == 0.005
    finally:
        sys.setswitchinterval(before)
