"""The connector contract kit's own checks: its helpers, and that its suite catches a broken
connector (a contract that every connector passes would test nothing)."""

from __future__ import annotations

import pytest

from relaybot import INTERRUPTED_MARKER, mark_interrupted
from relaybot.testing import joins_to, long_text, split_interrupted

pytest_plugins = ["pytester"]


def test_joins_to_accepts_a_text_cut_at_whitespace() -> None:
    text = "One two.\n\nThree four five.  Six"
    assert joins_to(["One two.", "Three four five.", "Six"], text)
    assert joins_to([text], text + "\n")


@pytest.mark.parametrize(
    "parts",
    [
        [],  # nothing shown
        ["One two.", "One two.", "Three four five.  Six"],  # a part twice
        ["One two.", "Six"],  # a part lost
        ["One tw", "o.", "Three four five.  Six"],  # cut inside a word
        ["One two.", "Three four five.  Six", "!"],  # something added
        ["One two.", "", "Three four five.  Six"],  # an empty message
        ["One two.", "Three four five. Six"],  # whitespace inside a part changed
    ],
)
def test_joins_to_refuses_anything_else(parts: list[str]) -> None:
    assert not joins_to(parts, "One two.\n\nThree four five.  Six")


def test_split_interrupted_inverts_mark_interrupted() -> None:
    assert split_interrupted(mark_interrupted("partial text")) == ("partial text", True)
    assert split_interrupted(mark_interrupted("")) == ("", True)
    assert split_interrupted("plain text") == ("plain text", False)
    assert split_interrupted(f"quoting {INTERRUPTED_MARKER} inline") == (
        f"quoting {INTERRUPTED_MARKER} inline",
        False,
    )


def test_long_text_is_plain_paragraphs_of_the_asked_length() -> None:
    text = long_text(5000)
    assert 5000 <= len(text) < 5200
    assert "\n\n" in text and "😀" in text
    assert not set("*_`[]#>") & set(text)  # nothing a Markdown platform would render


BROKEN_TERMINAL = '''
from relaybot.connectors.terminal import TerminalConnector

from test_contract_base import TestTerminalContract as Base


class Stuttering(TerminalConnector):
    """Shows every finished message twice (a connector that re-sends its final frame)."""

    def _show(self, message_id, text, final):
        super()._show(message_id, text, final)
        if final:
            super()._show(message_id, text, final)


class TestBrokenTerminal(Base):
    wait_timeout = 3.0  # it fails: no need to wait long for that
    def make_connectors(self, fake):
        [made] = super().make_connectors(fake)
        made.__class__ = Stuttering
        return [made]
'''


def test_the_suite_fails_a_connector_that_shows_a_reply_twice(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    base = Path(__file__).parents[2] / "cli" / "test_contract.py"
    pytester.makepyfile(test_contract_base=base.read_text(encoding="utf-8"), test_broken=BROKEN_TERMINAL)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess(
        "test_broken.py", "-k", "long_reply_is_split or in_order", "-p", "no:cacheprovider", "-q"
    )
    result.assert_outcomes(failed=2, skipped=2)  # the group variants: a terminal has none
