"""``relaybot run``: starts configured connectors; SIGTERM saves live replies and exits 0."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time

SLOW_TEXT = " ".join(f"word{i}" for i in range(400))


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def partial_reply(bot) -> str:  # type: ignore[no-untyped-def]
    """The text of a reply still streaming (a checkpoint has been written), else ''."""
    try:
        rows = bot.rows("SELECT text FROM messages WHERE role = 'assistant' AND status = 'streaming'")
    except sqlite3.Error:  # not created or not migrated yet
        return ""
    return rows[0][0] if rows and rows[0][0] else ""


def test_sigterm_while_streaming_saves_the_partial_reply_and_exits_zero(bot, fake_server) -> None:
    bot.write_config("[bot]\ncheckpoint_interval = 0.3\n[connectors.terminal]\nchat = \"ops\"\n")
    fake_server.add_reply(SLOW_TEXT, tokens_per_second=10, chunk_size_chars=6)
    proc = bot.popen(
        "run", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"tell me a long story\n")
        proc.stdin.flush()  # and keep stdin open: the connector must not end on its own
        partial = wait_for(lambda: partial_reply(bot), what="a checkpoint of the streaming reply")
        assert partial.startswith("word0")

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err

    messages = bot.messages()
    assert messages[0] == ("user", "tell me a long story", "complete")
    role, text, status = messages[1]
    assert (role, status) == ("assistant", "interrupted")
    # nothing lost: at least what was checkpointed, and never the whole (it was cut off)
    assert text.startswith(partial) and "word399" not in text
    # the terminal user saw the partial reply too (scripted mode prints it when it ends)
    assert text.strip() in out.decode() and "interrupted" in out.decode()


def test_run_without_connectors_exits_2_with_a_hint(bot) -> None:
    result = bot.run("run", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "relaybot.toml" in lines[0] and "[connectors." in lines[0] and "relaybot chat" in lines[0]
    assert "Traceback" not in result.stderr
