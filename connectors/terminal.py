"""The terminal connector: chat with the bot in a shell (``relaybot chat``).

Interactive (stdin is a terminal): replies stream token by token; Ctrl-C stops the reply being
written (as ``/stop`` would) and, at the prompt, quits; Ctrl-D quits.

Scripted (stdin is a pipe or file): each input line is one message; each finished reply is
written to stdout (followed by a newline) before the next line is read; the program ends at end of
input. Progress and errors go to stderr so stdout holds only replies.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import sys
import threading
from typing import IO, Any

from relaybot import (
    NOTICE,
    BaseConnector,
    BaseConnectorConfig,
    ChatKey,
    ConnectorHost,
    ConnectorType,
    IncomingMessage,
    Outgoing,
    StreamPolicy,
    User,
    clean_text,
    hookimpl,
    mark_interrupted,
)

#: a terminal has no rate limits and no length limit worth splitting at
TERMINAL_POLICY = StreamPolicy(
    max_length=1_000_000,
    private_interval=0.0,
    group_interval=0.0,
    global_rate=0.0,
    can_edit=True,
    native_draft=False,
    typing_interval=None,
)


class TerminalConfig(BaseConnectorConfig):
    """``[connectors.terminal]`` (rarely needed: ``relaybot chat`` works without it)."""

    #: the chat id, so several people on one machine can keep separate histories
    chat: str = ""
    #: the user's display name (defaults to the login name)
    user: str = ""


class TerminalConnector(BaseConnector):
    """Reads messages from ``stdin``, writes replies to ``stdout``."""

    policy = TERMINAL_POLICY

    def __init__(
        self,
        name: str = "terminal",
        config: TerminalConfig | None = None,
        *,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        config = config or TerminalConfig()
        self.name = name
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        user = config.user or _login_name()
        self.user = User(id=user, name=user, is_admin=True)  # the local user owns the bot
        self.chat = ChatKey(self.name, config.chat or user)
        #: what the terminal uses of the core (set by :meth:`start`)
        self.host: ConnectorHost | None = None
        self._printed: dict[str, str] = {}
        self._next_id = 0
        self._current: asyncio.Future[Any] | None = None
        self._closed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        #: stdout was closed by its reader (broken pipe): nothing more is written
        self._output_gone = False

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    async def start(self, host: ConnectorHost) -> None:
        self.host = host
        loop = asyncio.get_running_loop()
        # a daemon thread reads stdin: it works for ttys, pipes and files alike and never
        # keeps the process alive at exit the way an executor thread blocked in readline would
        threading.Thread(target=self._read_lines, args=(loop,), daemon=True, name="stdin").start()
        self._loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._closed.set()
        if self._loop_task is not None and not self._loop_task.done():
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def wait_closed(self) -> None:
        """Return when the user quit (end of input, Ctrl-D, or Ctrl-C at the prompt)."""
        await self._closed.wait()

    def interrupt(self) -> None:
        """Ctrl-C: stop the reply being written, or quit when idle."""
        if self._current is not None and not self._current.done():
            self._write("\n")  # the terminal itself already echoed ^C
            stop = asyncio.get_running_loop().create_task(self._submit("/stop", wait=False))
            # keep a reference: the loop holds tasks only weakly, and /stop must not vanish
            self._background.add(stop)
            stop.add_done_callback(self._background.discard)
        else:
            self.close()

    def close(self) -> None:
        """Quit (SIGTERM, or Ctrl-C at the prompt): :meth:`wait_closed` returns.

        A reply still being written is not stopped here; the app's shutdown stops it and
        saves the partial text as interrupted.
        """
        if self.interactive and not self._closed.is_set():
            self._write("\n")
        self._closed.set()

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            encoding = getattr(self.stdin, "encoding", None) or "utf-8"
            for line in self.stdin:
                text = _valid_text(line.rstrip("\r\n"), encoding)
                loop.call_soon_threadsafe(self._lines.put_nowait, text)
        except (OSError, ValueError):
            pass
        finally:
            try:
                loop.call_soon_threadsafe(self._lines.put_nowait, None)
            except RuntimeError:  # loop already closed
                pass

    async def _run(self) -> None:
        if self.interactive:
            self._write("relaybot — type a message, /help for commands, Ctrl-D to quit.\n")
        try:
            while not self._closed.is_set() and not self._output_gone:
                if self.interactive:
                    self._write("\nyou> ")
                line = await self._lines.get()
                if line is None:
                    break
                if not line.strip():
                    continue
                await self._submit(line, wait=True)
        finally:
            self._closed.set()

    async def _submit(self, text: str, *, wait: bool) -> None:
        assert self.host is not None, "start() first"
        message = IncomingMessage(chat=self.chat, user=self.user, text=text, is_private=True)
        handover = await self.host.deliver(self.chat, message)
        if wait:
            self._current = handover.answered
            try:
                await handover.answered
            finally:
                self._current = None

    # ── primitives ──────────────────────────────────────────────────────────────────────────

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        if final and outgoing.interrupted:
            text = mark_interrupted(text)
        self._next_id += 1
        message_id = str(self._next_id)
        self._printed[message_id] = ""
        if self.interactive:
            self._write("\n")
        self._show(message_id, text, final)
        return message_id

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        if final and outgoing.interrupted:
            text = mark_interrupted(text)  # the "⏹ interrupted" paragraph, as in every text chat
        self._show(message_id, text, final)

    def _show(self, message_id: str, text: str, final: bool) -> None:
        printed = self._printed.get(message_id, "")
        if not self.interactive:
            # scripted: stdout carries finished replies only, one after another
            if final:
                self._write(text + "\n")
                self._printed.pop(message_id, None)
            return
        if text.startswith(printed):
            self._write(text[len(printed) :])
        else:  # the text changed in the middle (rare): show the new version whole
            self._write("\n" + text)
        self._printed[message_id] = text
        if final:
            self._write("\n")
            self._printed.pop(message_id, None)

    def _write(self, text: str) -> None:
        if self._output_gone:
            return
        try:
            self.stdout.write(text)
            self.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`relaybot chat | head -1`): quit quietly after the message
            # being answered, as other Unix tools do. Raising would make the scheduler retry
            # the write for many seconds; closing right here would cancel the reply during
            # its final bookkeeping. Replies are saved before they are shown: nothing is lost.
            self._output_gone = True
            _silence(self.stdout)


def _silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (tests pass StringIO): nothing will flush it at exit


def _valid_text(line: str, encoding: str) -> str:
    """``line`` with undecodable input bytes replaced by U+FFFD, then :func:`clean_text`-ed.

    Python keeps bytes that are not valid in the input encoding as lone surrogates, which
    cannot be stored or sent anywhere; one stray Latin-1 byte would fail the whole message.
    Decoding the bytes again gives one U+FFFD per bad byte sequence (as a UTF-8 decoder
    would); ``clean_text`` then removes NUL characters and catches anything left.
    """
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        try:
            line = line.encode(encoding, "surrogateescape").decode(encoding, "replace")
        except UnicodeError:
            pass  # not surrogateescape'd bytes after all: clean_text replaces them one by one
    return clean_text(line)


def _login_name() -> str:
    try:
        return getpass.getuser() or "local"
    except Exception:
        return os.environ.get("USER", "local") or "local"


@hookimpl
def register_connectors(register):  # type: ignore[no-untyped-def]
    register(
        ConnectorType(
            "terminal",
            TerminalConfig,
            lambda name, config: TerminalConnector(name, config),
            "Chat in this terminal (stdin/stdout)",
        )
    )
