"""A relaybot killed mid-reply: the partial reply survives and the next start marks it interrupted."""

from __future__ import annotations

import subprocess
import time

SLOW_TEXT = " ".join(f"word{i}" for i in range(400))


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
        first = bot.wait_streaming(proc)
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
    assert partial.startswith(first) and len(partial) > len(first)  # checkpoints kept coming

    result = bot.run("chat", "--chat", "crash", input="/history\n")
    assert result.returncode == 0, result.stderr
    assert bot.messages()[1] == ("assistant", partial, "interrupted")
    assert "tell me a long story" in result.stdout
    assert partial.strip() in result.stdout and "[interrupted]" in result.stdout
    assert "Traceback" not in result.stderr
