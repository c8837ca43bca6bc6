"""Config loading: the documented keys, ${ENV} secrets, and errors that name file, key and fix."""

from __future__ import annotations

import logging

import pytest

from relaybot import ConfigError, load_config, parse_config
from relaybot.core.contracts.redact import RedactingFilter, redact, redact_url
from relaybot.core.runtime.app import Relaybot


def write(tmp_path, text: str):
    path = tmp_path / "relaybot.toml"
    path.write_text(text)
    return path


def test_defaults_use_the_embedded_local_model() -> None:
    config = parse_config({}, "<defaults>")
    assert config.providers["local"]["type"] == "llama_cpp"
    assert config.default_provider == "local"
    assert config.bot.busy_policy == "interrupt"
    assert config.storage.url.startswith("sqlite+aiosqlite:///")


def test_contract_keys_load(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123")
    path = write(
        tmp_path,
        """
[bot]
system_prompt = "Be brief."
default_provider = "openai"
busy_policy = "queue"

[storage]
url = "sqlite+aiosqlite:///x.db"

[providers.openai]
type = "openai"
base_url = "https://api.openai.com/v1"
api_key = "${OPENAI_API_KEY}"
model = "gpt-4o-mini"

[providers.local]
type = "llama_cpp"

[connectors.terminal]
""",
    )
    config = load_config(path)
    assert config.bot.busy_policy == "queue" and config.default_provider == "openai"
    app = Relaybot(config)
    provider = app.build_provider("openai")
    assert provider.model == "gpt-4o-mini"
    from relaybot.plugins.providers.openai import OpenAIConfig

    settings = config.provider_config("openai", OpenAIConfig)
    assert "sk-from-env-123" not in repr(settings)  # a SecretStr: printing the config hides it
    assert redact("key=sk-from-env-123") == "key=***"
    plan = app.plan()
    assert any("openai" in p and "(default)" in p for p in plan["providers"])
    assert plan["connectors"] == ["terminal: terminal"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[bot\nx=1", "invalid TOML"),
        ("[bot]\nfoo = 1", "[bot.foo] is not a known key"),
        ('[bot]\nbusy_policy = "sometimes"', "[bot.busy_policy]"),
        ('[bot]\ndefault_provider = "nope"', "[bot.default_provider]"),
        (
            '[providers.x]\ntype = "openai"\napi_key = "${RELAYBOT_TEST_UNSET_VAR}"',
            "RELAYBOT_TEST_UNSET_VAR is not set",
        ),
        ("providers = 3", "[providers] must contain tables"),
    ],
)
def test_invalid_configs_name_file_and_key(tmp_path, text, expected) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_provider_section_is_validated_by_its_plugin(tmp_path) -> None:
    path = write(tmp_path, '[providers.p]\ntype = "openai"\nmodle = "typo"\n')
    with pytest.raises(ConfigError, match=r"\[providers\.p\.modle\] is not a known key"):
        Relaybot(load_config(path)).build_provider("p")
    path = write(tmp_path, '[providers.p]\ntype = "openia"\n')
    with pytest.raises(ConfigError, match=r"unknown provider type 'openia'.*openai"):
        Relaybot(load_config(path)).build_provider("p")


def test_missing_file_says_what_to_do(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"file not found; create it from config\.example\.toml"):
        load_config(tmp_path / "nope.toml")


def test_env_default_syntax(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RB_PROMPT", raising=False)
    config = load_config(write(tmp_path, '[bot]\nsystem_prompt = "${RB_PROMPT:-Hi there}"'))
    assert config.bot.system_prompt == "Hi there"


def test_validation_errors_never_echo_secret_values(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RB_SECRET_NUMBER", "not-a-number-secret")
    path = write(tmp_path, '[bot]\ncheckpoint_interval = "${RB_SECRET_NUMBER}"')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "not-a-number-secret" not in str(err.value)


def test_log_records_are_redacted(caplog) -> None:
    from relaybot.core.contracts.redact import register_secret

    register_secret("tok-abcdef-987")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s failed", ("tok-abcdef-987",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "token *** failed"
    assert redact_url("postgresql+asyncpg://bob:hunter2@db/x") == "postgresql+asyncpg://bob:***@db/x"


def test_the_example_config_is_valid(monkeypatch) -> None:
    """config.example.toml is documentation: it must load and every section must validate."""
    from pathlib import Path

    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    config = load_config(Path(__file__).resolve().parents[3] / "config.example.toml")
    plan = Relaybot(config).plan()
    assert plan["providers"] == ["openai: openai model='gpt-4o-mini' (default)"]
    assert plan["connectors"] == ["web: web"]
