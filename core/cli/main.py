"""The ``relaybot`` command: chat, run, check, plugins, jobs, export.

Every sub-command takes ``--config PATH`` (else ``$RELAYBOT_CONFIG``, else ``./relaybot.toml``,
else built-in defaults). Errors print one clear line to stderr and exit with status 2;
secrets never appear in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from relaybot.core.cli import eventloop
from relaybot.core.cli.config import RelaybotConfig, find_config, load_config
from relaybot.core.contracts.errors import ConfigError, RelaybotError, StorageError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.contracts.redact import install_log_redaction, redact

log = logging.getLogger("relaybot")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $RELAYBOT_CONFIG or ./relaybot.toml, else built-in defaults).",
)


class _ExpectedErrorFilter(logging.Filter):
    """Log expected failures (``RelaybotError``: locked database, provider down …) as one line.

    Their message already says what happened and what to do; a stack trace would bury it (in
    ``relaybot chat`` stderr is the user's screen). Tracebacks stay for everything else (bugs),
    and for every error with ``--log-level DEBUG``. Must run before the redacting filter, which
    turns the exception into plain text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RelaybotError):
            message = record.getMessage()
            detail = str(exc)
            record.msg = message if detail in message else f"{message}: {detail}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _setup_logging(level: str) -> None:
    debug = level.upper() == "DEBUG"
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # third-party chatter stays at WARNING unless asked for DEBUG
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic", "telegram", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _ExpectedErrorFilter) for f in handler.filters):
                handler.addFilter(_ExpectedErrorFilter())
    install_log_redaction()


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn relaybot errors into one clear line and exit status 2."""
    try:
        yield
    except RelaybotError as exc:
        click.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(2)


def _load(config_path: str | None) -> RelaybotConfig:
    try:
        return load_config(config_path)
    except UnicodeDecodeError as exc:
        # load_config reports unreadable files but not undecodable ones; without this the
        # user would get a traceback for a config saved in Latin-1 or UTF-16
        raise ConfigError(
            f"the file is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8",
            path=str(find_config(config_path)),
        ) from None


@click.group()
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="relaybot")
def main(log_level: str) -> None:
    """relaybot — AI assistants in the chats people already use."""
    _setup_logging(log_level)


@main.command()
@config_option
@click.option("--chat", "chat_id", default="", help="Chat id for the history (default: your login).")
def chat(config_path: str | None, chat_id: str) -> None:
    """Chat in this terminal. Ctrl-C stops a reply, Ctrl-D quits.

    With stdin not a terminal, each input line is one message and each finished reply is
    printed to stdout.
    """
    with _errors():
        config = _load(config_path)
        eventloop.run(_chat(config, chat_id), config.bot.event_loop)


async def _chat(config: RelaybotConfig, chat_id: str) -> None:
    from relaybot.connectors.terminal import TerminalConfig, TerminalConnector
    from relaybot.core.runtime.app import Relaybot

    app = Relaybot(config)
    terminal = TerminalConnector("terminal", TerminalConfig(chat=chat_id))
    loop = asyncio.get_running_loop()
    # Ctrl-C at a terminal stops the reply being written (and quits at the prompt); SIGTERM,
    # and SIGINT to a scripted chat, quit the way `relaybot run` does: shutdown saves the
    # partial reply as interrupted and the exit status is 0. Installed before the start: the
    # prompt shows while the start-up finishes (answering what a previous run left pending).
    loop.add_signal_handler(signal.SIGINT, terminal.interrupt if terminal.interactive else terminal.close)
    loop.add_signal_handler(signal.SIGTERM, terminal.close)
    try:
        await app.start(connectors=[terminal], start_configured=False)
        await terminal.wait_closed()
    finally:
        await app.stop()


@main.command()
@config_option
def run(config_path: str | None) -> None:
    """Start every configured connector and serve until SIGINT/SIGTERM.

    On shutdown, replies being written are saved (marked interrupted) before exit.
    """
    with _errors():
        config = _load(config_path)
        if not config.connectors:
            raise RelaybotError(
                f"{config.source}: no [connectors.*] table is configured, so there is nothing to run. "
                "Add one (see config.example.toml), or chat here with `relaybot chat`."
            )
        eventloop.run(_run(config), config.bot.event_loop)


async def _run(config: RelaybotConfig) -> None:
    from relaybot.core.runtime.app import Relaybot

    app = Relaybot(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # before the start: a signal during start-up (connecting, answering what a previous run
    # left pending) still stops cleanly, right after it
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    if not app.connectors:
        # every table has enabled = false: serving nothing until a signal would look like a hang
        await app.stop()
        raise RelaybotError(
            f"{config.source}: every [connectors.*] table has enabled = false, so there is nothing "
            "to run. Enable one, or chat here with `relaybot chat`."
        )
    for name, connector in app.connectors.items():
        where = getattr(connector, "url", "")
        click.echo(f"relaybot: {name} running" + (f" at {where}" if where else ""), err=True)
    click.echo("Ctrl-C to stop", err=True)
    await stop.wait()
    click.echo("stopping: saving live replies…", err=True)
    await app.stop()


@main.command()
@config_option
@click.option(
    "--offline",
    is_flag=True,
    help="Do not contact the database (only the config is checked).",
)
def check(config_path: str | None, offline: bool) -> None:
    """Validate the config, check the database is usable, and list what would start.

    Nothing is started and nothing is created: a SQLite file is opened read-only (or, when it
    does not exist yet, its directory is checked), PostgreSQL is connected to and its schema
    revision read.
    """
    with _errors():
        from relaybot.core.runtime.app import Relaybot
        from relaybot.core.storage.engine import configured_at, parse_url, probe

        config = _load(config_path)
        try:
            target = parse_url(config.storage.url)  # no I/O: only the URL's form and driver
        except StorageError as exc:
            raise ConfigError(str(exc), path=config.source) from None
        plan = Relaybot(config).plan()
        if not offline:
            # a StorageError here is the database's state, not the config's: exit 2 with it,
            # naming where the database is configured
            try:
                plan["storage"] = [*plan.get("storage", []), asyncio.run(probe(target))]
            except StorageError as exc:
                raise configured_at(exc, config.source) from None
        click.echo(f"config: {config.source} — OK")
        for section, items in plan.items():
            click.echo(f"{section}:")
            for item in items or ["(none)"]:
                click.echo(f"  {item}")


@main.command()
@config_option
def plugins(config_path: str | None) -> None:
    """List plugins, the hooks they implement and what they registered."""
    with _errors():
        from relaybot.core.runtime.plugins import PluginHost

        config = _load(config_path)
        host = PluginHost(disabled=config.plugins.disabled)
        host.load_entrypoints()
        host.check()
        regs = host.collect()
        for name in host.plugin_names():
            click.echo(name)
            click.echo(f"  hooks: {', '.join(host.hooks_of(name)) or '(none)'}")
            for item in regs.by_plugin(name):
                click.echo(f"  registers {item}")
        for name in sorted(config.plugins.disabled):
            click.echo(f"{name}\n  disabled by config")
        for name, reason in sorted(host.failed.items()):
            click.echo(f"{name}\n  FAILED: {reason}")


@main.command()
@config_option
def jobs(config_path: str | None) -> None:
    """List scheduled jobs: schedule, next run, last run and its outcome.

    Next runs are the ones stored in the database (shared by every process using it); a job
    no relaybot has run yet shows when it would first run.
    """
    with _errors():
        config = _load(config_path)
        eventloop.run(_jobs(config), config.bot.event_loop)


async def _jobs(config: RelaybotConfig) -> None:
    from datetime import UTC, datetime

    from relaybot.core.runtime.job_runner import plan_jobs
    from relaybot.core.runtime.plugins import PluginHost
    from relaybot.core.storage import Store, job_state

    host = PluginHost(disabled=config.plugins.disabled)
    host.load_entrypoints()
    host.check()
    planned = plan_jobs(host.collect().jobs, config)
    if not planned:
        click.echo("no scheduled jobs are registered")
        return
    store = await Store.open(config.storage.url)
    try:
        states = await store.run_sync(job_state.list_states)
    finally:
        await store.close()
    now = datetime.now(UTC)

    def when(value: datetime | None) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"

    if not config.jobs.enabled:
        click.echo("[jobs] enabled = false: this configuration runs no jobs")
    for name, p in sorted(planned.items()):
        state = states.get(name)
        click.echo(f"{name}  ({p.plugin}) {p.job.description}".rstrip())
        click.echo(f"  schedule: {p.schedule}" + ("" if p.enabled else "  — disabled"))
        if p.enabled:
            if state is not None and state.schedule == p.schedule:
                click.echo(f"  next run: {when(state.next_run_at)}")
            else:
                click.echo(f"  next run: {when(p.first_run(now))} (first run, once relaybot starts)")
        if state is not None and state.last_run_at is not None:
            outcome = state.last_status + (f": {state.last_error}" if state.last_error else "")
            click.echo(f"  last run: {when(state.last_run_at)} — {redact(outcome)}")
        else:
            click.echo("  last run: never")


@main.command()
@config_option
@click.option(
    "--chat", "chat_spec", default="", help="platform:chat[:thread] (default: this user's terminal chat)."
)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("--all", "export_all", is_flag=True, help="Export every conversation of the chat.")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Write one file per conversation into this folder (default: stdout).",
)
def export(config_path: str | None, chat_spec: str, fmt: str, export_all: bool, output: str | None) -> None:
    """Export conversations as Markdown or JSON."""
    with _errors():
        config = _load(config_path)
        eventloop.run(_export(config, chat_spec, fmt, export_all, output), config.bot.event_loop)


async def _export(
    config: RelaybotConfig, chat_spec: str, fmt: str, export_all: bool, output: str | None
) -> None:
    from relaybot.connectors.terminal import _login_name
    from relaybot.core.runtime.conversations import ChatConversations
    from relaybot.core.runtime.turns import TurnManager
    from relaybot.core.storage import Store

    if chat_spec:
        platform, _, rest = chat_spec.partition(":")
        chat_id, _, thread = rest.partition(":")
        if not platform or not chat_id:
            raise RelaybotError("--chat must look like platform:chat or platform:chat:thread")
        key = ChatKey(platform, chat_id, thread or None)
    else:
        key = ChatKey("terminal", _login_name())
    store = await Store.open(config.storage.url)
    try:
        service = ChatConversations(store, TurnManager(), key)
        conversations = await service.list()
        if not conversations:
            raise RelaybotError(
                f"no conversations stored for {key} in {store.url}; check --chat "
                "(platform:chat, e.g. terminal:NAME as used with `relaybot chat --chat NAME`) "
                "and [storage] url"
            )
        active = await service.active()
        chosen = conversations if export_all else [c for c in conversations if active and c.id == active.id]
        for conv in chosen or conversations[-1:]:
            text = await service.export(fmt, conv.number)
            if output:
                path = Path(output) / f"conversation-{conv.number}.{fmt}"
                try:
                    await asyncio.to_thread(_write_file, path, text)
                except OSError as exc:
                    raise RelaybotError(
                        f"cannot write {path}: {exc.strerror or exc}; pass an --output folder "
                        "that can be created and written"
                    ) from None
                click.echo(str(path), err=True)
            else:
                click.echo(text)
    finally:
        await store.close()


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
