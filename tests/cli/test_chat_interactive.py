"""``relaybot chat`` under a pseudo-terminal: prompt, streaming, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

import pytest

SLOW_TEXT = " ".join(f"word{i}" for i in range(300))


class Terminal:
    """The master side of a pty running relaybot; ``expect`` reads until a pattern shows up."""

    def __init__(self, proc: subprocess.Popen[bytes], master: int) -> None:
        self.proc = proc
        self.master = master
        self.output = b""
        self.cursor = 0  # expect() searches from here, so old output never matches again

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        self.output += data
        return bool(data)

    def expect(self, pattern: bytes, timeout: float = 30.0) -> bytes:
        """Wait for ``pattern`` after the cursor; return the text up to its end and move past it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.output.find(pattern, self.cursor)
            if found >= 0:
                start, self.cursor = self.cursor, found + len(pattern)
                return self.output[start : self.cursor]
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(
                    f"{pattern!r} did not appear; output after cursor: {self.output[self.cursor :]!r}"
                )

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def drain(self, timeout: float = 5.0) -> None:
        """Read until the child closes the terminal (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break


@pytest.fixture
def terminal(bot):
    master, slave = pty.openpty()
    # its own session: the SIGINT the test sends is for relaybot only, never for pytest
    proc = bot.popen("chat", "--chat", "tty", stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    term = Terminal(proc, master)
    yield term
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    os.close(master)


def test_prompt_reply_and_ctrl_d_exits_zero(terminal, fake_server) -> None:
    terminal.expect(b"you> ")
    terminal.send(b"hello there\r")
    terminal.expect(b"You said: hello there")
    terminal.expect(b"you> ")
    terminal.send(b"\x04")  # Ctrl-D at the prompt
    assert terminal.proc.wait(30) == 0


def test_ctrl_c_stops_a_streaming_reply_without_quitting(terminal, fake_server, bot) -> None:
    fake_server.add_reply(SLOW_TEXT, tokens_per_second=10, chunk_size_chars=6)
    terminal.expect(b"you> ")
    terminal.send(b"tell me a long story\r")
    # partial text is on the screen long before the reply could be complete
    terminal.expect(b"word2 ")
    assert b"word299" not in terminal.output

    terminal.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    terminal.expect(b"you> ")  # the prompt is back: the process did not quit
    assert terminal.proc.poll() is None
    assert b"word299" not in terminal.output

    # the partial reply is stored, marked interrupted, and the bot answers the next message
    messages = bot.messages()
    assert messages[0] == ("user", "tell me a long story", "complete")
    role, text, status = messages[1]
    assert (role, status) == ("assistant", "interrupted")
    assert text.startswith("word0 word1 word2") and "word299" not in text

    terminal.send(b"still there?\r")
    terminal.expect(b"You said: still there?")
    terminal.expect(b"you> ")
    terminal.send(b"\x04")
    assert terminal.proc.wait(30) == 0


def test_ctrl_c_at_the_prompt_quits_cleanly(terminal) -> None:
    terminal.expect(b"you> ")
    terminal.proc.send_signal(signal.SIGINT)
    assert terminal.proc.wait(30) == 0
    terminal.drain()
    assert b"Traceback" not in terminal.output


def test_sigterm_mid_reply_quits_and_keeps_the_partial_reply(terminal, fake_server, bot) -> None:
    fake_server.add_reply(SLOW_TEXT, tokens_per_second=10, chunk_size_chars=6)
    terminal.expect(b"you> ")
    terminal.send(b"tell me a long story\r")
    terminal.expect(b"word2 ")
    terminal.proc.send_signal(signal.SIGTERM)
    assert terminal.proc.wait(30) == 0
    terminal.drain()
    assert b"Traceback" not in terminal.output
    role, text, status = bot.messages()[1]
    assert (role, status) == ("assistant", "interrupted")
    assert text.startswith("word0 word1 word2") and "word299" not in text
