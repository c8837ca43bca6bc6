"""Markdown → Telegram entities: offsets in UTF-16, nesting, tolerance of broken markup."""

from __future__ import annotations

import random

import pytest

from relaybot.connectors.telegram.formatting import MAX_ENTITIES, markdown_to_entities, utf16_len
from relaybot.core.testing.fake_telegram.entities import validate_entities


def covered(text: str, entity: dict) -> str:
    units = text.encode("utf-16-le")
    return units[2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])].decode("utf-16-le")


def spans(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    text, entities = markdown_to_entities(markdown)
    return text, [(e["type"], covered(text, e)) for e in entities]


def assert_valid(text: str, entities: list[dict]) -> None:
    """What Telegram checks: known types, ranges inside the text, proper nesting."""
    validate_entities(text, entities)  # the fake's own checks (types, ranges, required fields)
    ranges = [(e["offset"], e["offset"] + e["length"]) for e in entities]
    for a_start, a_end in ranges:
        for b_start, b_end in ranges:
            overlap = a_start < b_end and b_start < a_end
            nested = (a_start <= b_start and b_end <= a_end) or (b_start <= a_start and a_end <= b_end)
            assert not overlap or nested, (text, entities)
    for e in entities:
        if e["type"] in ("code", "pre"):  # nothing may sit inside code (around it is fine)
            inner = [o for o in entities if o is not e and e["offset"] <= o["offset"]
                     and o["offset"] + o["length"] <= e["offset"] + e["length"]
                     and (o["offset"], o["length"]) != (e["offset"], e["length"])]  # fmt: skip
            assert not inner


@pytest.mark.parametrize(
    ("markdown", "text", "found"),
    [
        ("**bold** and __bold__", "bold and bold", [("bold", "bold"), ("bold", "bold")]),
        ("*it* and _it_", "it and it", [("italic", "it"), ("italic", "it")]),
        ("~~gone~~", "gone", [("strikethrough", "gone")]),
        ("***both***", "both", [("bold", "both"), ("italic", "both")]),
        (
            "**bold *and italic* inside**",
            "bold and italic inside",
            [("bold", "bold and italic inside"), ("italic", "and italic")],
        ),
        ("`a*b*c`", "a*b*c", [("code", "a*b*c")]),
        ("`` has ` tick ``", "has ` tick", [("code", "has ` tick")]),
        ("[the docs](https://example.com/x_(y))", "the docs", [("text_link", "the docs")]),
        ("[**bold link**](https://e.com)", "bold link", [("text_link", "bold link"), ("bold", "bold link")]),
        ("# Title\nbody", "Title\nbody", [("bold", "Title")]),
        (
            "> quoted **line**\n> two",
            "quoted line\ntwo",
            [("blockquote", "quoted line\ntwo"), ("bold", "line")],
        ),
        ("- one\n* two\n  + three", "• one\n• two\n  • three", []),
        ("1. first\n2. second", "1. first\n2. second", []),
        ("a\n\n---\n\nb", "a\n\n———\n\nb", []),
        ("\\*not italic\\*", "*not italic*", []),
    ],
)
def test_constructs(markdown: str, text: str, found: list[tuple[str, str]]) -> None:
    got_text, got = spans(markdown)
    assert got_text == text
    assert sorted(got) == sorted(found)


@pytest.mark.parametrize(
    "markdown",
    [
        "**unclosed bold",
        "an *unclosed italic",
        "`unclosed code",
        "[link](no-scheme)",
        "[dangling",
        "snake_case_variable and file_name.py",
        "2 * 3 * 4 = 24",
        "a ** b ** c",
        "__init__ method",
        "~single tilde~",
        "a **** b",
    ],
)
def test_broken_or_ordinary_text_stays_literal(markdown: str) -> None:
    text, entities = markdown_to_entities(markdown)
    if markdown == "__init__ method":
        assert [e["type"] for e in entities] in ([], ["bold"])
    else:
        assert (text, entities) == (markdown, []) or markdown == "[link](no-scheme)"
        assert text == markdown


def test_fenced_code_keeps_markup_and_language() -> None:
    md = "Intro\n\n```python\nx = a * b * c  # **not bold**\n```\nAfter"
    text, entities = markdown_to_entities(md)
    assert text == "Intro\n\nx = a * b * c  # **not bold**\nAfter"
    assert entities == [{"type": "pre", "offset": 7, "length": 29, "language": "python"}]


def test_unclosed_fence_runs_to_the_end_and_tildes_work() -> None:
    assert spans("```\ncode *x*") == ("code *x*", [("pre", "code *x*")])
    assert spans("~~~js\nlet a\n~~~") == ("let a", [("pre", "let a")])
    assert spans("```x``` inline") == ("x inline", [("code", "x")])


def test_offsets_are_utf16_after_emoji_and_astral_characters() -> None:
    md = "😀😀 **bold 𝄞** then `code` 👍🏽"
    text, entities = markdown_to_entities(md)
    assert text == "😀😀 bold 𝄞 then code 👍🏽"
    bold, code = entities
    assert (bold["offset"], bold["length"]) == (5, 7)  # 2 emoji = 4 units + space
    assert covered(text, bold) == "bold 𝄞" and covered(text, code) == "code"


def test_surrounding_whitespace_is_stripped_with_entities_shifted() -> None:
    text, entities = markdown_to_entities("\n\n  **hi** there  \n")
    assert text == "hi there"
    assert entities == [{"type": "bold", "offset": 0, "length": 2}]


def test_entity_count_is_capped() -> None:
    text, entities = markdown_to_entities(" ".join(f"**b{i}**" for i in range(300)))
    assert len(entities) == MAX_ENTITIES
    assert_valid(text, entities)


def test_output_is_never_longer_than_input_and_always_valid() -> None:
    rng = random.Random(7)
    alphabet = ["*", "**", "_", "__", "~~", "`", "```", "```py\n", "[", "](https://x.y)", "(", ")", "#", "> ",
                "- ", "\n", "\n\n", " ", "word", "😀", "é", "\\", "https://a.b/_c_", "1. "]  # fmt: skip
    for _ in range(1500):
        md = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        text, entities = markdown_to_entities(md)
        assert utf16_len(text) <= utf16_len(md), md
        assert_valid(text, entities)
        assert text == text.strip()
