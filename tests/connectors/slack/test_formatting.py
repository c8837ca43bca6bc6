"""Markdown → Slack: markdown blocks for final replies, mrkdwn where only that is accepted."""

from __future__ import annotations

import pytest

from relaybot.connectors.slack.formatting import (
    MAX_MARKDOWN_BLOCK,
    MAX_SECTION,
    markdown_block,
    markdown_messages,
    section_blocks,
    split_markdown,
    to_mrkdwn,
)


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("***both***", "*_both_*"),
        ("~~gone~~", "~gone~"),
        ("snake_case_name and 2 * 3 * 4", "snake_case_name and 2 * 3 * 4"),
        ("# Title", "*Title*"),
        ("### **Already bold**", "*Already bold*"),
        ("- one\n* two\n  + nested", "• one\n• two\n  • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> a **quote**", "> a *quote*"),
        ("---", "———"),
        ("[the docs](https://example.com/a?b=1)", "<https://example.com/a?b=1|the docs>"),
        ("![a cat](https://example.com/cat.png)", "<https://example.com/cat.png|a cat>"),
        ("use `**not bold**` here", "use `**not bold**` here"),
    ],
)
def test_markdown_to_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_special_characters_are_escaped_so_a_model_cannot_ping_everyone() -> None:
    assert to_mrkdwn("<!channel> hi <@U123> & you") == "&lt;!channel&gt; hi &lt;@U123&gt; &amp; you"
    assert to_mrkdwn("`a < b`") == "`a &lt; b`"


def test_code_fences_keep_content_and_drop_the_language() -> None:
    markdown = "Run:\n```python\nif a < b and **x**:\n    pass\n```\ndone **now**"
    assert to_mrkdwn(markdown) == "Run:\n```\nif a &lt; b and **x**:\n    pass\n```\ndone *now*"


@pytest.mark.parametrize(
    ("half", "expected"),
    [
        ("so **bold", "so **bold"),  # an unmatched marker stays literal
        ("a `code", "a `code"),
        ("[link](https://exa", "[link](https://exa"),
        ("```js\nlet x = 1", "```\nlet x = 1\n```"),  # an open fence is closed
    ],
)
def test_half_written_markdown_is_safe(half: str, expected: str) -> None:
    assert to_mrkdwn(half) == expected


def test_markdown_block_limits() -> None:
    assert markdown_block("**hi**") == {"type": "markdown", "text": "**hi**"}
    with pytest.raises(ValueError, match="12000"):
        markdown_block("x" * (MAX_MARKDOWN_BLOCK + 1))
    with pytest.raises(ValueError):
        markdown_block("   ")


def test_long_reply_becomes_several_messages_with_fences_repaired() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(3000)) + "\n```\n"
    reply = "Intro paragraph.\n\n" + code + "\nThe end."
    messages = markdown_messages(reply)
    assert len(messages) >= 2
    for message in messages:
        [block] = message["blocks"]
        assert block["type"] == "markdown" and len(block["text"]) <= MAX_MARKDOWN_BLOCK
        assert block["text"].count("```") % 2 == 0  # every piece has its fences closed
        assert message["text"] == to_mrkdwn(block["text"])
    assert messages[1]["blocks"][0]["text"].startswith("```python\n")
    joined = "".join(m["blocks"][0]["text"] for m in messages)
    assert all(f"print({i})" in joined for i in range(3000))  # nothing lost at the cuts


def test_split_and_section_blocks() -> None:
    assert split_markdown("short") == ["short"]
    sections = section_blocks("para **one**\n\n" + "word " * 1000)
    assert len(sections) >= 2
    assert all(s["type"] == "section" and s["text"]["type"] == "mrkdwn" for s in sections)
    assert all(len(s["text"]["text"]) <= MAX_SECTION for s in sections)
    assert sections[0]["text"]["text"].startswith("para *one*")
