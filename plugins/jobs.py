"""Built-in scheduled jobs: ``retention`` and ``usage_report``.

``retention`` (off by default) deletes conversations nobody touched for ``days`` days, and the
image/video files no remaining message refers to::

    [jobs.retention]
    enabled = true
    days = 30                  # required when enabled
    cron = "30 3 * * *"        # the default: every night at 03:30 ([jobs] timezone)

``usage_report`` sends the admins (``[bot] admins``, each in their private chat) the tokens used
per model over the last ``days`` days, every Monday at 09:00 by default::

    [jobs.usage_report]
    days = 7
    chats = []                 # platform:chat[:thread] to send to instead of the admins

A plugin like any other, using only the public API (``from relaybot import …``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relaybot import ChatKey, Job, JobContext, RelaybotError, Usage, hookimpl


class RetentionOptions(BaseModel):
    """``[jobs.retention]`` options."""

    model_config = ConfigDict(extra="forbid")

    #: conversations unchanged for this many days are deleted
    days: int = Field(ge=1, le=36500)
    #: also delete media files no remaining message refers to
    media: bool = True


class UsageReportOptions(BaseModel):
    """``[jobs.usage_report]`` options."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=7, ge=1, le=366)
    #: where to send it (``platform:chat[:thread]``); empty: the admins' private chats
    chats: list[str] = Field(default_factory=list)

    @field_validator("chats")
    @classmethod
    def _chat_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            platform, _, rest = spec.partition(":")
            if not platform or not rest:
                raise ValueError(f"{spec!r} is not platform:chat[:thread]")
        return value

    def chat_keys(self) -> list[ChatKey]:
        """The configured chats as ChatKeys."""
        keys = []
        for spec in self.chats:
            platform, _, rest = spec.partition(":")
            chat, _, thread = rest.partition(":")
            keys.append(ChatKey(platform, chat, thread or None))
        return keys


async def retention(ctx: JobContext) -> None:
    """Delete conversations (and unused media) older than ``days``; log what went."""
    options: RetentionOptions = ctx.options
    cutoff = ctx.scheduled_at - timedelta(days=options.days)
    removed, files = await ctx.bot.delete_old_conversations(cutoff, media=options.media)
    ctx.log.info("retention: deleted %d conversation(s) and %d media file(s) older than %s", removed,
                 files, cutoff.isoformat())  # fmt: skip


def render_usage(by_model: dict[str, Usage], days: int) -> str:
    """The report's text: the total, then one line per model (largest first)."""
    total_in = sum(u.input_tokens for u in by_model.values())
    total_out = sum(u.output_tokens for u in by_model.values())
    estimated = any(u.estimated for u in by_model.values())
    mark = "~" if estimated else ""
    lines = [f"📊 Usage over the last {days} day(s)"]
    if not total_in + total_out:
        lines.append("No tokens were used.")
        return "\n".join(lines)
    lines.append(f"Total: {mark}{total_in + total_out:,} tokens ({total_in:,} in, {total_out:,} out)")
    for model, usage in sorted(by_model.items(), key=lambda kv: -(kv[1].input_tokens + kv[1].output_tokens)):
        tokens = usage.input_tokens + usage.output_tokens
        lines.append(f"  {model or '(unknown model)'}: {'~' if usage.estimated else ''}{tokens:,} tokens")
    if estimated:
        lines.append("~ includes estimates (a provider reported no usage).")
    return "\n".join(lines)


async def usage_report(ctx: JobContext) -> None:
    """Send the usage of the last ``days`` days to the admins (or the configured chats)."""
    options: UsageReportOptions = ctx.options
    chats = options.chat_keys() or list(ctx.bot.admin_chats())
    if not chats:
        ctx.log.info("usage_report: no [bot] admins and no chats configured; nothing sent")
        return
    by_model = await ctx.bot.usage.usage_by_model(since=ctx.scheduled_at - timedelta(days=options.days))
    text = render_usage(by_model, options.days)
    failed: list[str] = []
    for chat in chats:
        try:
            await ctx.bot.send(chat, text)
        except Exception as exc:
            ctx.log.warning("usage_report: could not send to %s: %s", chat, exc)
            failed.append(str(chat))
    if failed:
        raise RelaybotError(f"usage report not delivered to {', '.join(failed)}")


@hookimpl
def register_jobs(register):  # type: ignore[no-untyped-def]
    register(
        Job(
            "retention",
            retention,
            cron="30 3 * * *",
            description="delete conversations and media unchanged for [jobs.retention] days days",
            enabled=False,
            options=RetentionOptions,
        )
    )
    register(
        Job(
            "usage_report",
            usage_report,
            cron="0 9 * * 1",
            description="tokens per model of the last days, sent to the admins",
            options=UsageReportOptions,
        )
    )
