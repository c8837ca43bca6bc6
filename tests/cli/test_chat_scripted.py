"""``relaybot chat`` with stdin a pipe: one message per line, finished replies on stdout."""

from __future__ import annotations

import json
import subprocess


def test_scripted_chat_replies_in_order_and_commands_work(bot, fake_server) -> None:
    fake_server.add_reply("Paris is the capital of France.", tokens_per_second=200)
    fake_server.add_reply("Berlin, on the Spree.")
    script = "\n".join(
        [
            "What is the capital of France?",
            "And of Germany?",
            "/new rivers",
            "Name a river.",
            "/list",
            "/switch 1",
            "/export json",
        ]
    )
    result = bot.run("chat", "--chat", "alice", input=script + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # replies appear in the order the messages were sent, each one whole
    first = out.index("Paris is the capital of France.")
    second = out.index("Berlin, on the Spree.")
    third = out.index("You said: Name a river.")  # the fake's default answer
    assert first < second < third
    listing = out[third:]
    assert "1. What is the capital of France?" in listing
    assert "2. rivers" in listing and "▶ 2. rivers" in listing
    # /switch 1 then /export json: the export is the first conversation, as valid JSON
    lines = out.splitlines()
    exported = json.loads("\n".join(lines[lines.index("{") :]))
    assert exported["title"] == "What is the capital of France?"
    assert exported["chat"] == {"platform": "terminal", "chat": "alice", "thread": None}
    assert [(m["role"], m["text"], m["status"]) for m in exported["messages"]] == [
        ("user", "What is the capital of France?", "complete"),
        ("assistant", "Paris is the capital of France.", "complete"),
        ("user", "And of Germany?", "complete"),
        ("assistant", "Berlin, on the Spree.", "complete"),
    ]
    # stdout holds replies only; nothing was printed as a traceback
    assert "Traceback" not in result.stderr


def test_restart_keeps_every_conversation(bot) -> None:
    first = bot.run("chat", "--chat", "bob", input="first question\n/new later\nsecond question\n")
    assert first.returncode == 0, first.stderr

    again = bot.run("chat", "--chat", "bob", input="/list\n/history\n")
    assert again.returncode == 0, again.stderr
    assert "1. first question" in again.stdout
    assert "▶ 2. later" in again.stdout
    # the active conversation's history survived the restart
    assert "second question" in again.stdout and "You said: second question" in again.stdout

    # and switching back reaches the older conversation's messages
    back = bot.run("chat", "--chat", "bob", input="/switch 1\n/history\n")
    assert back.returncode == 0, back.stderr
    assert "You said: first question" in back.stdout
    assert "second question" not in back.stdout.split("Switched to", 1)[1]


def test_end_of_input_exits_zero_without_a_message(bot, fake_server) -> None:
    result = bot.run("chat", input="")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert fake_server.request_count() == 0


def test_reader_going_away_ends_the_chat_quietly(bot) -> None:
    """`relaybot chat | head -1`: relaybot stops after the broken pipe, with no retries or traces."""
    proc = bot.popen(
        "chat", "--chat", "pipe", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"".join(f"line {i}\n".encode() for i in range(20)))
    proc.stdin.close()
    assert proc.stdout.readline() == b"You said: line 0\n"
    proc.stdout.close()  # like `head -1` exiting
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stderr = proc.stderr.read().decode()
    assert "Broken pipe" not in stderr and "Traceback" not in stderr, stderr
    # it stopped soon after the reader left instead of answering all 20 lines into the void
    messages = bot.messages()
    assert messages[:2] == [("user", "line 0", "complete"), ("assistant", "You said: line 0", "complete")]
    assert len(messages) < 40
    assert all(status == "complete" for _, _, status in messages)


def test_undecodable_input_bytes_are_replaced_not_fatal(bot) -> None:
    result = subprocess.run(
        bot.argv("chat", "--chat", "latin"),
        input=b"caf\xe9 au lait\nsecond\n",
        capture_output=True,
        timeout=60,
        cwd=bot.root,
        env=bot.env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["You said: caf\ufffd au lait", "You said: second"]
    assert bot.messages()[0] == ("user", "caf\ufffd au lait", "complete")
    assert b"Traceback" not in result.stderr


def test_nul_characters_are_stripped_not_fatal(bot) -> None:
    """A NUL cannot be stored as text; it is removed at the edge and the message kept."""
    result = subprocess.run(
        bot.argv("chat", "--chat", "nul"),
        input=b"tea\x00 please\nsecond\n",
        capture_output=True,
        timeout=60,
        cwd=bot.root,
        env=bot.env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["You said: tea please", "You said: second"]
    assert bot.messages()[0] == ("user", "tea please", "complete")
