"""``relaybot.clean_text``: the edge normaliser every connector applies to incoming text."""

from __future__ import annotations

import relaybot
from relaybot import clean_text


def test_lone_surrogates_become_replacement_characters() -> None:
    assert clean_text("hello \ud83d there") == "hello \ufffd there"
    assert clean_text("\ude00 end") == "\ufffd end"
    # reversed halves are two lone surrogates, not a pair
    assert clean_text("\ude00\ud83d") == "\ufffd\ufffd"
    clean_text("hello \ud83d there").encode("utf-8")  # storable


def test_a_surrogate_pair_held_as_two_code_points_is_joined() -> None:
    assert clean_text("smile \ud83d\ude00") == "smile 😀"


def test_nul_is_removed_and_valid_text_is_unchanged() -> None:
    assert clean_text("a\x00b\x00") == "ab"
    text = "Grüße 👋 — tabs\tand\nnewlines stay"
    assert clean_text(text) is text


def test_it_is_part_of_the_public_api() -> None:
    assert "clean_text" in relaybot.__all__
