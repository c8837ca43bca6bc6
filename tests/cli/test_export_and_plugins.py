"""``relaybot export`` of stored conversations, and ``relaybot plugins``."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def chatted(bot, fake_server):  # type: ignore[no-untyped-def]
    """Two conversations in chat ``terminal:carol``; the second is active."""
    fake_server.add_reply("Rome was not built in a day.")
    fake_server.add_reply("The Nile is the longest.")
    result = bot.run("chat", "--chat", "carol", input="About Rome?\n/new rivers\nLongest river?\n")
    assert result.returncode == 0, result.stderr
    return bot


def test_export_markdown_of_the_active_conversation(chatted) -> None:
    result = chatted.run("export", "--chat", "terminal:carol", "--format", "md")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("# rivers")
    assert "Longest river?" in out and "The Nile is the longest." in out
    assert "Rome" not in out  # only the active conversation without --all


def test_export_json_all_to_stdout(chatted) -> None:
    result = chatted.run("export", "--chat", "terminal:carol", "--format", "json", "--all")
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    docs, text = [], result.stdout.strip()
    while text:
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    assert [d["title"] for d in docs] == ["About Rome?", "rivers"]
    assert [m["text"] for m in docs[0]["messages"]] == ["About Rome?", "Rome was not built in a day."]
    assert [m["text"] for m in docs[1]["messages"]] == ["Longest river?", "The Nile is the longest."]


def test_export_all_into_a_folder(chatted) -> None:
    fmt = "md"
    out_dir = chatted.root / "exports" / "nested"
    result = chatted.run("export", "--chat", "terminal:carol", "--format", fmt, "--all", "-o", str(out_dir))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == [f"conversation-1.{fmt}", f"conversation-2.{fmt}"]
    assert result.stdout == ""  # file names go to stderr, so stdout stays pipeable
    assert str(out_dir / f"conversation-1.{fmt}") in result.stderr
    first = (out_dir / f"conversation-1.{fmt}").read_text(encoding="utf-8")
    assert first.startswith("# About Rome?") and "Rome was not built in a day." in first


def test_export_unknown_chat_is_a_clear_error(chatted) -> None:
    result = chatted.run("export", "--chat", "terminal:nobody")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no conversations stored for terminal:nobody" in lines[0], result.stderr
    assert result.stdout == ""


def test_export_malformed_chat_spec(chatted) -> None:
    result = chatted.run("export", "--chat", "carol")
    assert result.returncode == 2
    assert "--chat must look like platform:chat" in result.stderr and "Traceback" not in result.stderr


def test_export_into_an_unwritable_folder(chatted) -> None:
    blocker = chatted.root / "a-file"
    blocker.write_text("not a folder")
    result = chatted.run("export", "--chat", "terminal:carol", "-o", str(blocker / "sub"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker / "sub") in lines[0], result.stderr


def test_plugins_lists_the_built_ins_with_their_hooks(bot) -> None:
    result = bot.run("plugins")
    assert result.returncode == 0, result.stderr
    blocks: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith(" "):
            current = blocks.setdefault(line, [])
        else:
            current.append(line.strip())
    for name in ("openai", "llama_cpp", "conversation_commands", "terminal"):
        assert name in blocks, result.stdout
    assert blocks["openai"] == ["hooks: register_providers", "registers provider type 'openai'"]
    assert blocks["llama_cpp"] == ["hooks: register_providers", "registers provider type 'llama_cpp'"]
    assert blocks["terminal"] == ["hooks: register_connectors", "registers connector type 'terminal'"]
    commands = blocks["conversation_commands"]
    assert commands[0] == "hooks: register_commands"
    for command in ("new", "list", "switch", "rename", "delete", "history", "export", "stop", "help"):
        assert f"registers command /{command}" in commands
    assert "FAILED" not in result.stdout
