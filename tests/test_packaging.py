"""Packaging: the folder mapping yields one `relaybot` package, and third-party plugins load
through a real entry point after a real `pip install`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "fixtures" / "relaybot-dice"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    return next(out.glob("relaybot-*.whl"))


def test_wheel_installs_only_the_relaybot_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.startswith("relaybot-")}
    assert top == {"relaybot"}, top
    assert "relaybot/core/runtime/app.py" in names
    assert "relaybot/core/modelio/prices.toml" in names
    assert "relaybot/connectors/terminal.py" in names
    assert "relaybot/plugins/providers/openai.py" in names
    assert "relaybot/core/storage/migrations/versions/0001_initial.py" in names
    assert not any(n.startswith(("core/", "plugins/", "tests/")) for n in names)


def test_normal_install_imports_from_site_packages(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
    )
    code = "import relaybot.core.runtime.app, relaybot.plugins.providers.openai as o; print(o.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().startswith(str(target))


def _install_plugin(tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "plugins"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(PLUGIN)],
        check=True,
    )
    return {**os.environ, "PYTHONPATH": str(target)}


def test_third_party_plugin_is_listed_and_its_command_works(tmp_path: Path, fake_openai_url: str) -> None:
    env = _install_plugin(tmp_path)
    listing = subprocess.run(
        [sys.executable, "-m", "relaybot.core", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert "dice" in listing and "registers command /roll" in listing and "check_access" in listing

    config = tmp_path / "relaybot.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/bot.db"\n'
        f'[providers.fake]\ntype = "openai"\nbase_url = "{fake_openai_url}"\nmodel = "gpt-4o-mini"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "relaybot.core", "chat", "--config", str(config)],
        input="/roll 20\nsay forbidden-word\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("🎲 d20 → ")
    assert 1 <= int(lines[0].rsplit(" ", 1)[1]) <= 20
    assert lines[1] == "That word is not allowed here."


def test_disabled_plugin_is_not_loaded(tmp_path: Path) -> None:
    env = _install_plugin(tmp_path)
    config = tmp_path / "relaybot.toml"
    config.write_text('[plugins]\ndisabled = ["dice"]\n')
    listing = subprocess.run(
        [sys.executable, "-m", "relaybot.core", "plugins", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/roll" not in listing and "disabled by config" in listing
