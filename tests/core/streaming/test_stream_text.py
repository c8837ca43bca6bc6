"""Length counting and clean splitting (relaybot.core.streaming.text)."""

from __future__ import annotations

import random

import pytest

from relaybot.core.streaming.text import (
    Fence,
    find_cut,
    fit_prefix,
    scan_fences,
    split_text,
    text_length,
)

EMOJI = "😀"  # outside the BMP: 1 code point, 2 UTF-16 units


def texts(parts):
    return [p.text for p in parts]


def test_text_length_counts_code_points_or_utf16_units():
    assert text_length("héllo", "chars") == 5
    assert text_length("héllo", "utf16") == 5
    assert text_length(f"a{EMOJI}b", "chars") == 3
    assert text_length(f"a{EMOJI}b", "utf16") == 4
    assert text_length("👍🏽", "utf16") == 4  # thumbs up + skin tone: two astral code points
    assert text_length("", "utf16") == 0


def test_fit_prefix_never_splits_a_surrogate_pair():
    text = "ab" + EMOJI * 5
    assert fit_prefix(text, 3, "utf16") == 2  # the emoji would need units 3-4
    assert fit_prefix(text, 4, "utf16") == 3
    assert fit_prefix(text, 100, "utf16") == len(text)
    assert fit_prefix(text, 3, "chars") == 3


def test_short_text_is_one_part():
    assert texts(split_text("Hello there.", 50)) == ["Hello there."]
    assert split_text("", 50)[0].body == ""


def test_prefers_paragraph_break():
    first = "First paragraph, with a sentence. And another one here."
    second = "Second paragraph goes on and on and on and on."
    parts = split_text(f"{first}\n\n{second}", 80)
    assert texts(parts) == [first, second]


def test_falls_back_to_line_break():
    first = "line one is fairly long\nline two is also long"
    text = f"{first}\nline three pushes it over the limit"
    parts = split_text(text, 60)
    assert texts(parts)[0] == first
    assert texts(parts)[1] == "line three pushes it over the limit"


def test_falls_back_to_sentence_end():
    text = "This is sentence one. This is sentence two! And here comes a third sentence"
    parts = split_text(text, 50)
    assert texts(parts)[0] == "This is sentence one. This is sentence two!"
    assert texts(parts)[1] == "And here comes a third sentence"


def test_ignores_a_paragraph_break_that_would_leave_a_tiny_part():
    text = "Hi.\n\n" + "word " * 30
    parts = split_text(text, 60)
    assert len(texts(parts)[0]) > 30  # not just "Hi."


def test_never_cuts_inside_a_word():
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    text = " ".join(words * 20)
    for part in split_text(text, 37):
        assert part.text.split() == [w for w in part.text.split() if w in words]
    assert "".join(p.body for p in split_text(text, 37)) == text


def test_hard_cuts_a_word_longer_than_the_limit():
    text = "short " + "x" * 100 + " tail"
    parts = split_text(text, 40)
    assert texts(parts)[0] == "short"
    assert all(text_length(t) <= 40 for t in texts(parts))
    assert "".join(p.body for p in parts) == text


def test_hard_cut_keeps_surrogate_pairs_whole():
    text = EMOJI * 50  # one 100-unit "word"
    parts = split_text(text, 21, "utf16")
    for t in texts(parts):
        assert text_length(t, "utf16") <= 21
        assert set(t) == {EMOJI}
        t.encode("utf-8")  # would raise on a lone surrogate
    assert "".join(p.body for p in parts) == text


def test_code_fence_is_closed_and_reopened_with_its_language():
    code = "\n".join(f"print({i})" for i in range(12))
    text = f"Here is code:\n\n```python\n{code}\n```\n\nDone."
    parts = split_text(text, 60)
    assert len(parts) >= 2
    first, second = texts(parts)[:2]
    assert first.startswith("Here is code:")
    assert first.endswith("\n```")
    assert second.startswith("```python\n")
    assert all(text_length(t) <= 60 for t in texts(parts))
    # every part is valid on its own: an even number of fence lines
    for t in texts(parts):
        assert sum(1 for line in t.split("\n") if line.startswith("```")) % 2 == 0


def test_scan_fences_tracks_open_state():
    assert scan_fences("```js\nx\n") == Fence("```", "js")
    assert scan_fences("```js\nx\n```\n") is None
    assert scan_fences("x\n```\n", Fence("```", "js")) is None
    assert scan_fences("inline ```code``` only") is None
    assert scan_fences("```py\n", line_start=False) is None  # a line continued from before
    assert scan_fences("~~~~\nx\n```\n") == Fence("~~~~", "")  # a different marker closes nothing


def test_find_cut_returns_whole_text_when_it_fits():
    assert find_cut("abc def", 10) == 7


def test_fuzz_rejoin_and_limits():
    rng = random.Random(20240611)
    vocab = [
        "word", "a", "longerword", "x" * 45, "emoji" + EMOJI, EMOJI * 3, "é", "end.", "what?",
        "\n", "\n\n", " ", "  ", "```python\n", "\n```\n", "~~~\n", "👍🏽", "日本語", "\t",
    ]  # fmt: skip
    for _ in range(400):
        n = rng.randint(0, 120)
        text = "".join(rng.choice(vocab) + (" " if rng.random() < 0.6 else "") for _ in range(n))
        unit = rng.choice(["chars", "utf16"])
        limit = rng.randint(16, 160)
        parts = split_text(text, limit, unit)
        assert "".join(p.body for p in parts) == text
        for i, part in enumerate(parts):
            assert text_length(part.text, unit) <= limit, (text, limit, unit)
            part.text.encode("utf-8")  # no lone surrogates
            if i < len(parts) - 1:
                assert part.body.strip(), "a cut part must have visible text"
                nxt = parts[i + 1]
                assert nxt.fence_in == (
                    None if part.fence_out is None else nxt.fence_in
                )  # reopened iff closed
                if part.fence_out is not None:
                    assert nxt.fence_in is not None
                    assert nxt.fence_in.marker == part.fence_out.marker
                # mid-word cut only when the part has no usable whitespace at all
                if not part.body[-1].isspace() and not nxt.body[:1].isspace():
                    assert not any(c in " \t\n" for c in part.body.lstrip())


@pytest.mark.parametrize("limit", [16, 17, 33])
def test_tiny_limits_still_progress(limit):
    text = "```" + "z" * 200 + "\n" + "more text " * 20
    parts = split_text(text, limit)
    assert "".join(p.body for p in parts) == text
    assert all(text_length(t) <= limit for t in texts(parts))


def test_split_rejects_absurd_limits():
    with pytest.raises(ValueError):
        split_text("abc", 3)
