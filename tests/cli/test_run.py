"""Stopping relaybot with a signal while it streams: exit 0 and the partial reply is kept.

``relaybot run`` starts the configured connectors and stops on SIGTERM/SIGINT; a scripted
``relaybot chat`` (stdin a pipe) stops the same way.
"""

from __future__ import annotations

import signal
import subprocess

import pytest

SLOW_TEXT = " ".join(f"word{i}" for i in range(400))


def stop_while_streaming(bot, fake_server, sig: int, *args: str) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """Start relaybot ARGS, send a message that gets a slow reply, signal it mid-stream.

    Returns (checkpointed text seen before the signal, stdout, stderr) once it exited 0.
    """
    fake_server.add_reply(SLOW_TEXT, tokens_per_second=10, chunk_size_chars=6)
    proc = bot.popen(
        *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"tell me a long story\n")
        proc.stdin.flush()  # and keep stdin open: only the signal may end the process
        partial = bot.wait_streaming(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    return partial, out.decode(), err.decode()


def assert_partial_kept(bot, partial: str, stdout: str) -> None:  # type: ignore[no-untyped-def]
    messages = bot.messages()
    assert messages[0] == ("user", "tell me a long story", "complete")
    role, text, status = messages[1]
    assert (role, status) == ("assistant", "interrupted")
    # nothing lost: at least what was checkpointed, and not the whole (it was cut off)
    assert text.startswith(partial) and "word399" not in text
    # the user saw the partial reply too (scripted mode prints it when it ends), marked as cut
    assert text.strip() in stdout and "interrupted" in stdout
    assert "^C" not in stdout  # stdout of a scripted run holds replies only


def test_run_stops_on_sigterm_saving_the_partial_reply(bot, fake_server) -> None:
    # (SIGINT takes the same path in `run`: both set the stop event)
    bot.write_config('[bot]\ncheckpoint_interval = 0.3\n[connectors.terminal]\nchat = "ops"\n')
    partial, out, err = stop_while_streaming(bot, fake_server, signal.SIGTERM, "run")
    assert "relaybot: terminal running" in err
    assert_partial_kept(bot, partial, out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_scripted_chat_stops_on_signal_saving_the_partial_reply(bot, fake_server, sig: int) -> None:
    bot.write_config("[bot]\ncheckpoint_interval = 0.3\n")
    partial, out, _ = stop_while_streaming(bot, fake_server, sig, "chat", "--chat", "ops")
    assert_partial_kept(bot, partial, out)


@pytest.mark.parametrize(
    "connectors",
    ["[connectors]\n", "[connectors.terminal]\nenabled = false\n"],
    ids=["empty-table", "all-disabled"],
)
def test_run_with_nothing_to_start_exits_2_with_a_hint(bot, connectors: str) -> None:
    bot.write_config(connectors)
    result = bot.run("run")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: relaybot.toml: ") and "[connectors." in line and "relaybot chat" in line
    assert "nothing to run" in line
