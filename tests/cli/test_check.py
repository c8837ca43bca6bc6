"""``relaybot check`` and config errors: one line naming file, key and fix; secrets never shown."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

SECRET = "sk-supersecret-123"


def test_check_valid_config_lists_what_would_start(bot) -> None:
    bot.write_config('[connectors.terminal]\nchat = "ops"\n')
    result = bot.run("check")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "relaybot.toml — OK" in out
    sections = {line.rstrip(":") for line in out.splitlines() if line and not line.startswith(" ")}
    assert {"storage", "providers", "connectors", "commands", "plugins"} <= sections
    assert str(bot.db) in out
    assert "fake: openai model='gpt-4o-mini' (default)" in out
    assert "terminal: terminal" in out
    for command in ("/new", "/list", "/switch", "/export", "/history", "/stop", "/help"):
        assert f"  {command}\n" in out
    # check starts nothing: no database was created
    assert not bot.db.exists()


BAD_CONFIGS = {
    "invalid_toml": ("[bot\nsystem_prompt = 1\n", ["invalid TOML", "line 1"]),
    "unknown_key": ("[bot]\nfoo = 1\n", ["[bot.foo]", "not a known key", "remove it"]),
    "bad_value": ("[bot]\ncheckpoint_interval = -1\n", ["[bot.checkpoint_interval]", "greater than 0"]),
    "bad_type": ('[bot]\nbusy_policy = "sometimes"\n', ["[bot.busy_policy]", "'interrupt' or 'queue'"]),
    "unknown_provider_type": (
        '[providers.x]\ntype = "nope"\n',
        ["[providers.x.type]", "unknown provider type 'nope'", "openai", "install the plugin"],
    ),
    "unknown_provider_key": (
        '[providers.x]\ntype = "openai"\ntemprature = 0.2\n',
        ["[providers.x.temprature]", "not a known key"],
    ),
    "missing_env_secret": (
        '[providers.x]\ntype = "openai"\napi_key = "${RELAYBOT_TEST_MISSING_KEY}"\n',
        ["[providers.x.api_key]", "RELAYBOT_TEST_MISSING_KEY is not set", "export RELAYBOT_TEST_MISSING_KEY"],
    ),
    "default_provider_missing": (
        '[bot]\ndefault_provider = "zzz"\n[providers.x]\ntype = "openai"\n',
        ["[bot.default_provider]", "'zzz'", "configured: x", "fix the name or add the table"],
    ),
    "unknown_connector_type": (
        '[providers.x]\ntype = "openai"\n[connectors.chatroom]\ntoken = "t"\n',
        ["[connectors.chatroom]", "unknown connector type 'chatroom'"],
    ),
    "unsupported_storage_url": (
        '[storage]\nurl = "mysql://db/bot"\n[providers.x]\ntype = "openai"\n',
        ["[storage] url", "mysql", "sqlite+aiosqlite://"],
    ),
    "not_utf8": (b'[bot]\nsystem_prompt = "caf\xe9"\n', ["not UTF-8"]),
    # issue 11.5: what `run` used to log and ignore (or refuse only later) fails `check` too
    "plugin_table_typo": (
        '[providers.x]\ntype = "openai"\n[plugins.usgae]\ntimezone = "UTC"\n',
        [
            "[plugins.usgae]",
            "not the settings table of any installed plugin",
            "did you mean [plugins.usage]",
            "fix the name or remove the table",
        ],
    ),
    "plugin_key_typo": (
        '[providers.x]\ntype = "openai"\n[plugins.usage]\ntimezon = "UTC"\n',
        ["[plugins.usage.timezon]", "not a known key", "check its spelling"],
    ),
    "plugin_bad_value": (
        '[providers.x]\ntype = "openai"\n[plugins.imagine]\nmodel = "dall-e-3"\nsize = "1536x1024"\n',
        ["[plugins.imagine]", "size '1536x1024' is not offered by dall-e-3"],
    ),
    "plugin_cross_check": (
        '[providers.x]\ntype = "anthropic"\n[plugins.imagine]\nprovider = "x"\n',
        ["[plugins.imagine.provider]", "not of type openai"],
    ),
    "plugins_disabled_typo": (
        '[providers.x]\ntype = "openai"\n[plugins]\ndisabeld = ["imagine"]\n',
        ["[plugins.disabeld]", "not a key of [plugins]", "did you mean `disabled`?"],
    ),
    "connector_type_typo": (
        '[providers.x]\ntype = "openai"\n[connectors.chat]\ntype = "wbe"\n',
        ["[connectors.chat.type]", "unknown connector type 'wbe'", "did you mean type = 'web'?"],
    ),
}


@pytest.fixture(scope="module")
def bad_config_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """``relaybot check`` on every BAD_CONFIGS file, run a few at a time (process start dominates)."""
    root = tmp_path_factory.mktemp("bad-configs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOT_")}

    def check(name: str) -> tuple[Path, Any]:
        body = BAD_CONFIGS[name][0]
        path = root / f"{name}.toml"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "relaybot.core", "check", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
            env=env,
        )
        return path, result

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(BAD_CONFIGS, pool.map(check, BAD_CONFIGS), strict=True))


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_one_clear_line_and_exit_2(bad_config_results, name: str) -> None:
    expected = BAD_CONFIGS[name][1]
    path, result = bad_config_results[name]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: {path}: "), line
    for fragment in expected:
        assert fragment in line, (fragment, line)
    assert result.stdout == ""


def test_connector_type_typo_suggests_no_made_up_extra(bad_config_results) -> None:
    assert "relaybot[wbe]" not in bad_config_results["connector_type_typo"][1].stderr


RUN_REFUSES = {
    "plugin_table_typo": ('[plugins.usgae]\ntimezone = "UTC"\n', "did you mean [plugins.usage]"),
    "plugin_key_typo": ('[plugins.usage]\ntimezon = "UTC"\n', "[plugins.usage.timezon] is not a known key"),
    "plugins_disabled_typo": ('[plugins]\ndisabeld = ["imagine"]\n', "did you mean `disabled`?"),
    "connector_type_typo": ('[connectors.chat]\ntype = "wbe"\n', "did you mean type = 'web'?"),
    "connector_bad_value": ('[connectors.web]\nport = 99999\n', "[connectors.web.port]"),
}


@pytest.mark.parametrize("name", sorted(RUN_REFUSES))
def test_run_refuses_what_check_refuses_before_touching_the_database(bot, name: str) -> None:
    """`run` validates everything (plugins and connectors too) before it creates the database."""
    extra, fragment = RUN_REFUSES[name]
    bot.write_config("[connectors.terminal]\nenabled = false\n" + extra)
    for command in ("check", "run"):
        result = bot.run(command, timeout=60)
        assert result.returncode == 2, (command, result.stderr)
        line = result.stderr.strip()
        assert line.startswith("error: relaybot.toml: ") and fragment in line, (command, line)
        assert "\n" not in line and "Traceback" not in result.stderr
    assert not bot.db.exists()


def test_check_fails_on_an_unwritable_storage_directory(bot) -> None:
    """Permission bits are not enough (relaybot may run as root): /proc accepts no new files."""
    bot.write_config("[connectors.terminal]\n", storage_url="sqlite+aiosqlite:////proc/relaybot/bot.db")
    result = bot.run("check")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("error: relaybot.toml: [storage.url] ") and "/proc is not writable" in line
    assert "point [storage] url at another path" in line


def test_check_fails_on_a_write_locked_sqlite_database(bot) -> None:
    bot.write_config("[connectors.terminal]\n")
    assert bot.run("chat", input="hello\n").returncode == 0
    holder = sqlite3.connect(bot.db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        holder.execute("CREATE TABLE squatter (x)")
        result = bot.run("check", timeout=60)
    finally:
        holder.close()
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("error: relaybot.toml: [storage.url] ") and "is locked" in line, line
    assert bot.run("check").returncode == 0  # released: fine again


def test_chat_with_a_bad_config_fails_the_same_way(bot) -> None:
    bot.config.write_text("[bot]\nfoo = 1\n", encoding="utf-8")
    result = bot.run("chat", input="hello\n")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: relaybot.toml: [bot.foo] is not a known key: remove it or check its spelling"
    )


def test_missing_config_file_names_it(bot) -> None:
    result = bot.run("check", "--config", "nowhere.toml")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: nowhere.toml: file not found")


def test_secret_from_the_environment_never_appears_in_output(bot, fake_server) -> None:
    bot.env["OPENAI_API_KEY"] = SECRET
    bot.write_config(
        provider=(
            f'[providers.fake]\ntype = "openai"\nbase_url = "{fake_server.base_url}"\n'
            'api_key = "${OPENAI_API_KEY}"\n'
        )
    )
    # a hostile/buggy server that echoes the whole key back in its 401 body
    for _ in range(2):
        fake_server.call(lambda s: s.add_error(401, f"Incorrect API key provided: {SECRET}."))

    debug_chat = bot.run("--log-level", "DEBUG", "chat", input="hello\n/export json\n")
    assert debug_chat.returncode == 0, debug_chat.stderr
    # the user was told, and the key reached the server (so it really was used)
    assert "API key" in debug_chat.stdout
    sent = fake_server.call(lambda s: s.requests[0].headers["authorization"])
    assert sent == f"Bearer {SECRET}"

    chat = bot.run("chat", input="hello again\n")
    assert chat.returncode == 0, chat.stderr
    assert "API key" in chat.stdout and fake_server.request_count() == 2

    check = bot.run("--log-level", "DEBUG", "check")
    assert check.returncode == 0, check.stderr

    # `run` through an error path after the provider (and its key) was set up
    bot.write_config(
        "[connectors.terminal]\nenabled = false\n",
        provider=(
            f'[providers.fake]\ntype = "openai"\nbase_url = "{fake_server.base_url}"\n'
            'api_key = "${OPENAI_API_KEY}"\n'
        ),
    )
    bad = bot.run("--log-level", "DEBUG", "run")
    assert bad.returncode == 2

    for result in (debug_chat, chat, check, bad):
        assert SECRET not in result.stdout + result.stderr
        assert "supersecret" not in result.stdout + result.stderr
    # stored history has no key either (the error text is not stored as a message)
    assert not any(SECRET in text for _, text, _ in bot.messages())


def test_check_reports_the_database_state_without_changing_it(bot) -> None:
    bot.write_config("[connectors.terminal]\n")
    fresh = bot.run("check")
    assert fresh.returncode == 0, fresh.stderr
    assert "does not exist yet (created at start)" in fresh.stdout and not bot.db.exists()
    # once the bot has run, the file holds the current schema
    ran = bot.run("chat", input="hello\n")
    assert ran.returncode == 0, ran.stderr
    before = bot.db.stat().st_mtime_ns
    used = bot.run("check")
    assert used.returncode == 0, used.stderr
    assert "reachable, schema current" in used.stdout
    assert bot.db.stat().st_mtime_ns == before  # opened read-only


def test_check_fails_when_the_database_was_migrated_by_a_newer_relaybot(bot) -> None:
    bot.write_config("[connectors.terminal]\n")
    assert bot.run("chat", input="hello\n").returncode == 0
    conn = sqlite3.connect(bot.db)
    conn.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    conn.commit()
    conn.close()
    result = bot.run("check")
    assert result.returncode == 2
    assert "f00dfeedbeef" in result.stderr and "Upgrade relaybot" in result.stderr
    assert bot.run("check", "--offline").returncode == 0  # config only


def test_check_fails_clearly_when_postgresql_is_unreachable(bot) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot.write_config(
        "[connectors.terminal]\n", storage_url=f"postgresql+asyncpg://bob:{SECRET}@127.0.0.1:{port}/bot"
    )
    result = bot.run("check")
    assert result.returncode == 2
    assert "connection refused" in result.stderr and "Is PostgreSQL running" in result.stderr
    assert result.stderr.startswith("error: relaybot.toml: [storage.url] cannot connect to PostgreSQL at")
    run = bot.run("chat", input="hello\n")  # starting names the file and key the same way
    assert run.returncode == 2
    assert run.stderr.startswith("error: relaybot.toml: [storage.url] cannot connect to PostgreSQL at")
    assert SECRET not in run.stderr + run.stdout
    assert SECRET not in result.stderr + result.stdout


def test_check_reaches_postgresql(bot, pg_url: str) -> None:
    bot.write_config("[connectors.terminal]\n", storage_url=pg_url)
    result = bot.run("check")
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL at" in result.stdout and "no relaybot schema yet" in result.stdout
