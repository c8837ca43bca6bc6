"""Built-in conversation commands: /new /list /switch /rename /delete /history /export /stop /help.

A plugin like any other: it uses only the public API (``relaybot.hookimpl``, ``Command``,
``CommandContext``), so it doubles as an example for plugin authors.
"""

from __future__ import annotations

from relaybot import Command, CommandContext, CommandError, hookimpl

#: how much of each message /history shows
_PREVIEW = 300


def _number(args: str, usage: str) -> int:
    word = args.split(maxsplit=1)[0] if args.strip() else ""
    if not word.isdigit():
        raise CommandError(f"Usage: {usage}")
    return int(word)


async def new(ctx: CommandContext) -> None:
    conv = await ctx.conversations.new(ctx.args)
    title = f" “{conv.title}”" if conv.title else ""
    await ctx.reply(f"Started a new conversation{title}. Earlier ones are in /list.")


async def list_(ctx: CommandContext) -> None:
    conversations = await ctx.conversations.list()
    if not conversations:
        await ctx.reply("No conversations yet. Send a message to start one.")
        return
    active = await ctx.conversations.active()
    lines = ["Conversations (switch with /switch N):"]
    for conv in conversations:
        mark = "▶" if active is not None and conv.id == active.id else " "
        lines.append(f"{mark} {conv.number}. {conv.title or '(untitled)'}")
    await ctx.reply("\n".join(lines))


async def switch(ctx: CommandContext) -> None:
    conv = await ctx.conversations.switch(_number(ctx.args, "/switch N (see /list)"))
    await ctx.reply(f"Switched to {conv.number}. {conv.title or '(untitled)'}.")


async def rename(ctx: CommandContext) -> None:
    args = ctx.args.strip()
    number = None
    head, _, rest = args.partition(" ")
    if head.isdigit() and rest.strip():
        number, args = int(head), rest
    await ctx.conversations.rename(args, number)
    await ctx.reply(f"Renamed to “{args.strip()}”.")


async def delete(ctx: CommandContext) -> None:
    conv = await ctx.conversations.delete(_number(ctx.args, "/delete N (see /list)"))
    await ctx.reply(f"Deleted {conv.number}. {conv.title or '(untitled)'}.")


async def history(ctx: CommandContext) -> None:
    count = _number(ctx.args, "/history [N]") if ctx.args.strip() else 10
    messages = await ctx.conversations.history(min(count, 100))
    if not messages:
        await ctx.reply("This conversation is empty.")
        return
    lines = []
    for msg in messages:
        text = msg.text if len(msg.text) <= _PREVIEW else msg.text[:_PREVIEW] + "…"
        flag = "" if msg.status == "complete" else f" [{msg.status}]"
        lines.append(f"{msg.role.value}{flag}: {text or '(image)'}")
    await ctx.reply("\n\n".join(lines))


async def export(ctx: CommandContext) -> None:
    fmt = (ctx.args.split() or ["md"])[0].lower()
    await ctx.reply(await ctx.conversations.export(fmt))


async def stop(ctx: CommandContext) -> None:
    stopped = await ctx.conversations.stop()
    if not stopped:
        await ctx.reply("Nothing to stop.")


async def help_(ctx: CommandContext) -> None:
    lines = ["Commands:"]
    for command in ctx.registry:
        usage = f" {command.usage}" if command.usage else ""
        lines.append(f"/{command.name}{usage} — {command.help}")
    await ctx.reply("\n".join(lines))


COMMANDS = (
    Command("new", "start a new conversation", new, usage="[title]"),
    Command("list", "list this chat's conversations", list_),
    Command("switch", "continue conversation N", switch, usage="N"),
    Command("rename", "rename the active conversation (or N)", rename, usage="[N] title"),
    Command("delete", "delete conversation N", delete, usage="N"),
    Command("history", "show the last N messages", history, usage="[N]"),
    Command("export", "export the conversation as Markdown or JSON", export, usage="[md|json]"),
    Command("stop", "stop the answer being written", stop),
    Command("help", "list the commands", help_),
)


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    for command in COMMANDS:
        register(command)
