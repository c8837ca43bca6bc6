"""``/imagine <prompt>``: generate an image with the OpenAI images API and post it in the chat.

Config (all keys optional)::

    [plugins.imagine]
    provider = "openai"        # a [providers.NAME] of type "openai"; default: the first one
    model = "gpt-image-1"      # or "gpt-image-1-mini", "dall-e-3", …
    size = "1024x1024"         # gpt-image: 1024x1024 1536x1024 1024x1536 auto
                               # dall-e-3: 1024x1024 1792x1024 1024x1792
    quality = "auto"           # gpt-image: low medium high auto; dall-e-3: standard hd
                               # (default: the model's own)
    timeout = 180              # seconds to wait for the image

The picture is drawn by the provider (``generate_image`` of the OpenAI provider:
``POST {base_url}/images/generations`` with its ``base_url`` and API key) through the
resilience layer, so the provider's ``max_retries``, ``retry_max_wait``, ``rpm`` and
``fallbacks`` apply as for chat answers. GPT image models always answer with base64; for DALL·E
models the plugin asks for ``response_format = "b64_json"``.

While it works the user sees "🎨 Generating…" and a typing indicator; then the image arrives
with the prompt as caption and the notice is removed (on failure the notice turns into the
error). The image is saved in the media store, and the prompt and result are stored in the
active conversation (so /history and /export show them, and a vision model sees the picture in
later turns). Notice, typing and image all go through the chat's streaming scheduler, paced
and 429-aware like any reply.

A plugin like any other, using only the public API (``from relaybot import …``).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relaybot import (
    BotServices,
    BudgetExceededError,
    CapabilityError,
    ChatKey,
    Command,
    CommandContext,
    CommandError,
    ConfigError,
    GeneratedImage,
    ImagePart,
    ImageRequest,
    PluginSettings,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RelaybotConfig,
    RelaybotError,
    RequestOrigin,
    TextPart,
    hookimpl,
)

log = logging.getLogger("relaybot.plugins.imagine")

#: per model family (name prefix): allowed sizes, allowed qualities, default quality, prompt limit
_FAMILIES: dict[str, tuple[frozenset[str], frozenset[str], str, int]] = {
    "gpt-image": (frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
                  frozenset({"low", "medium", "high", "auto"}), "auto", 32_000),
    "dall-e-3": (frozenset({"1024x1024", "1792x1024", "1024x1792"}), frozenset({"standard", "hd"}),
                 "standard", 4_000),
    "dall-e-2": (frozenset({"256x256", "512x512", "1024x1024"}), frozenset({"standard"}), "standard", 1_000),
}  # fmt: skip
_PROGRESS = "🎨 Generating…"


class ImagineSettings(BaseModel):
    """``[plugins.imagine]``. Unknown keys and options the model does not take are errors."""

    model_config = ConfigDict(extra="forbid")

    #: a ``[providers.NAME]`` table of type ``openai``; empty: the first such table
    provider: str = ""
    model: str = "gpt-image-1"
    size: str = "1024x1024"
    #: empty: the model's default (``auto`` for GPT image models, ``standard`` for DALL·E)
    quality: str = ""
    timeout: float = Field(default=180.0, gt=0)

    @model_validator(mode="after")
    def _check_options(self) -> ImagineSettings:
        family = _family(self.model)
        if family is None:
            return self  # an OpenAI-compatible server's own model: it checks its options itself
        sizes, qualities, _default, _limit = _FAMILIES[family]
        if self.size not in sizes:
            raise ValueError(f"size {self.size!r} is not offered by {self.model}; use one of {sorted(sizes)}")
        if self.quality and self.quality not in qualities:
            raise ValueError(
                f"quality {self.quality!r} is not offered by {self.model}; use one of {sorted(qualities)}"
            )
        return self


def _family(model: str) -> str | None:
    name = model.rsplit("/", 1)[-1].lower()
    return next((f for f in _FAMILIES if name.startswith(f)), None)


def _provider_name(config: RelaybotConfig, settings: ImagineSettings) -> str:
    """The ``[providers.NAME]`` that draws: ``provider``, else the first of type openai."""
    if settings.provider:
        if settings.provider not in config.providers:
            raise ConfigError(
                f"provider = {settings.provider!r} names no [providers.*] table",
                path=config.source,
                key="plugins.imagine.provider",
            )
        if config.provider_type(settings.provider) != "openai":
            raise ConfigError(
                f"provider {settings.provider!r} is not of type openai; /imagine needs the OpenAI images API",
                path=config.source,
                key="plugins.imagine.provider",
            )
        return str(settings.provider)
    for name in config.providers:
        if config.provider_type(name) == "openai":
            return str(name)
    raise ConfigError(
        "no [providers.*] table of type openai for /imagine; add one or set provider",
        path=config.source,
        key="plugins.imagine",
    )


def _check(settings: ImagineSettings, config: RelaybotConfig) -> None:
    _provider_name(config, settings)


#: ``[plugins.imagine]``, validated by the core at start-up and by ``relaybot check`` (including
#: that ``provider`` names a ``[providers.*]`` table of type openai, when the table is present)
SETTINGS = PluginSettings("imagine", ImagineSettings, "the image model and options of /imagine", check=_check)


# ── the images API ──────────────────────────────────────────────────────────────────────────


def image_request(settings: ImagineSettings, prompt: str) -> ImageRequest:
    """The provider request for ``prompt`` under ``settings`` (each model family's options)."""
    family = _family(settings.model)
    quality = settings.quality or (_FAMILIES[family][2] if family else "")
    # GPT image models always return base64 and reject response_format; DALL·E defaults to URLs
    options = {} if family == "gpt-image" else {"response_format": "b64_json"}
    return ImageRequest(
        prompt, settings.model, size=settings.size, quality=quality, timeout=settings.timeout, options=options
    )


async def generate(
    bot: BotServices, settings: ImagineSettings, prompt: str, *, origin: RequestOrigin | None
) -> GeneratedImage:
    """The picture for ``prompt``, drawn through the resilience layer (the provider's retries,
    ``rpm`` limit and fallbacks) with its worst case reserved against budgets first. Raises
    ProviderError subclasses whose ``user_message`` is safe to show and speaks of images
    (content policy refusals say so; a BudgetExceededError keeps its own message)."""
    name = _provider_name(bot.config, settings)
    try:
        return await bot.generate_image(name, image_request(settings, prompt), origin=origin)
    except BudgetExceededError:
        raise
    except ProviderError as exc:
        raise _about_images(exc) from None


_BUSY = "The image service is unavailable right now. Please try again shortly."


def _about_images(exc: ProviderError) -> ProviderError:
    """``exc`` with a ``user_message`` about the image service instead of "the AI model"."""
    if type(exc) is ProviderError:
        return exc  # its own message (a safety refusal) is already specific
    if isinstance(exc, ProviderRateLimitError):
        retry = exc.retry_after
        wait = f" in about {retry:.0f} s" if retry else " in a minute"
        exc.user_message = f"The image service is busy (rate limited). Please try again{wait}."
    elif isinstance(exc, ProviderTimeoutError):
        exc.user_message = "Generating the image took too long. Please try again."
    elif isinstance(exc, ProviderUnavailableError):
        exc.user_message = _BUSY
    elif isinstance(exc, ProviderNotFoundError):
        exc.user_message = "The configured image model was not found. An admin has to fix [plugins.imagine]."
    elif isinstance(exc, ProviderResponseError):
        exc.user_message = (
            "The image service refused the request. An admin can find the reason in the log."
            if exc.status
            else "The image service sent a broken answer. Please try again."
        )
    return exc


# ── the command ─────────────────────────────────────────────────────────────────────────────

#: chats with an image being generated, per running bot (one at a time per chat)
_busy: weakref.WeakKeyDictionary[Any, set[ChatKey]] = weakref.WeakKeyDictionary()


async def imagine(ctx: CommandContext) -> None:
    """Generate an image for ``ctx.args`` and post it (see the module docstring)."""
    bot = ctx.bot
    prompt = ctx.args.strip()
    if not prompt:
        raise CommandError("Describe the picture, e.g. /imagine a lighthouse at dawn, watercolour")
    settings = SETTINGS.of(bot)
    try:
        _provider_name(bot.config, settings)  # no [plugins.imagine] table: checked only now
    except ConfigError as exc:
        log.error("/imagine is not set up: %s", exc)
        raise CommandError(
            "Image generation is not set up correctly; an admin has to fix the config."
        ) from None
    family = _family(settings.model)
    limit = _FAMILIES[family][3] if family else None
    if limit is not None and len(prompt) > limit:
        raise CommandError(f"That description is too long for {settings.model} (at most {limit} characters).")
    chat = ctx.message.chat
    busy = _busy.setdefault(bot, set())
    if chat in busy:
        raise CommandError("I'm still working on the previous picture here. One at a time, please.")
    busy.add(chat)
    try:
        await _imagine(ctx, settings, prompt)
    finally:
        busy.discard(chat)


async def _imagine(ctx: CommandContext, settings: ImagineSettings, prompt: str) -> None:
    bot = ctx.bot
    message = ctx.message
    chat = message.chat
    # One stream carries the whole command: the progress notice (with typing while the image
    # is drawn), then the image in its place, or the error in the notice's place. Every
    # request is a paced scheduler frame, so 429s are waited out within the chat's budget.
    stream = bot.open_stream(chat, private=message.is_private, kind="command")
    try:
        stream.keep_typing()
        stream.append(_PROGRESS)
        try:
            # budgets: the image's worst case is reserved before the request and settled after it
            image = await generate(bot, settings, prompt, origin=RequestOrigin(chat, message.user.id))
        except ProviderError as exc:
            log.warning("/imagine failed in %s: %s", chat, exc)
            stream.replace_text("⚠️ " + exc.user_message)
            await stream.finish()
            return
        ref = await bot.media.save(image.data, mime_type="image/png")
        # the exchange joins the active conversation (the picture with its prompt as caption)
        conversations = ctx.conversations
        reply_id, conversation_id = await conversations.add_exchange(
            f"/imagine {prompt}",
            [ImagePart(ref), TextPart(prompt)],
            user_id=message.user.id,
            platform_message_id=message.platform_message_id,
            provider=image.provider or _provider_name(bot.config, settings),
            model=settings.model,
            usage=image.usage,
        )
        stream.describe(conversation_id=conversation_id, reply_id=reply_id)
        try:
            result = await stream.finish_image(image.data, caption=prompt, mime_type="image/png")
        except CapabilityError:
            stream.replace_text(
                "The picture is ready and saved in this conversation, but this chat cannot show images."
            )
            await stream.finish()
            return
        if result.message_ids:
            await conversations.link_platform_message(result.message_ids[0], reply_id)
    finally:
        if not stream.finished:  # an unexpected error or cancellation: never leave "Generating…"
            stream.replace_text("⚠️ " + RelaybotError.user_message)
            stream.finish_nowait()


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    # not ordered: the chat stays usable while the picture is drawn
    register(
        Command("imagine", "draw a picture from a description", imagine, usage="<description>", ordered=False)
    )


@hookimpl
def register_settings(register):  # type: ignore[no-untyped-def]
    register(SETTINGS)
