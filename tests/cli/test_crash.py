"""A relaybot killed mid-reply: the partial reply survives and the next start marks it interrupted."""

from __future__ import annotations

import sqlite3
import subprocess
import time

SLOW_TEXT = " ".join(f"word{i}" for i in range(400))


def streaming_reply(bot) -> str:  # type: ignore[no-untyped-def]
    try:
        rows = bot.rows("SELECT text FROM messages WHERE role = 'assistant' AND status = 'streaming'")
    except sqlite3.Error:  # the database is not created or migrated yet
        return ""
    return rows[0][0] if rows and rows[0][0] else ""


def test_sigkill_mid_reply_keeps_the_checkpoint_and_restart_marks_it_interrupted(bot, fake_server) -> None:
    bot.write_config("[bot]\ncheckpoint_interval = 0.3\n")
    fake_server.add_reply(SLOW_TEXT, tokens_per_second=10, chunk_size_chars=6)
    proc = bot.popen(
        "chat",
        "--chat",
        "crash",
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"tell me a long story\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while not streaming_reply(bot):
            assert time.monotonic() < deadline, "no checkpoint of the streaming reply was written"
            assert proc.poll() is None, "relaybot ended before the reply was streamed"
            time.sleep(0.1)
        time.sleep(1.5)  # stream a while longer, so several checkpoints land
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)

    # what a crash leaves: the user message and the last checkpoint, still marked streaming
    messages = bot.messages()
    assert messages[0] == ("user", "tell me a long story", "complete")
    role, partial, status = messages[1]
    assert (role, status) == ("assistant", "streaming")
    assert partial.startswith("word0 word1") and "word399" not in partial

    result = bot.run("chat", "--chat", "crash", input="/history\n")
    assert result.returncode == 0, result.stderr
    assert bot.messages()[1] == ("assistant", partial, "interrupted")
    assert "tell me a long story" in result.stdout
    assert partial.strip() in result.stdout and "[interrupted]" in result.stdout
    assert "Traceback" not in result.stderr
