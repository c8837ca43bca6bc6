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

The request goes to ``POST {base_url}/images/generations`` with the provider's ``base_url`` and
API key. GPT image models always answer with base64 (``b64_json``); for DALL·E models the
plugin asks for ``response_format = "b64_json"`` (and falls back to downloading a ``url`` if a
compatible server sends one). While it works the user sees "🎨 Generating…" and a typing
indicator; then the image arrives with the prompt as caption, is saved in the media store, and
the prompt and result are stored in the active conversation (so /history and /export show
them, and a vision model sees the picture in later turns).

A plugin like any other, using only the public API (``from relaybot import …``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import weakref
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from relaybot import (
    ChatKey,
    Command,
    CommandContext,
    CommandError,
    ConfigError,
    ImagePart,
    PlannedCall,
    PlatformRateLimitError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RequestOrigin,
    Role,
    TextPart,
    Usage,
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
#: seconds between typing indicators while the image is generated (platforms show one ~5 s)
TYPING_EVERY = 4.0
#: longest wait we honour when the chat platform rate-limits sending the finished image
_MAX_PLATFORM_WAIT = 30.0
_PROGRESS = "🎨 Generating…"
_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})


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

    def body(self, prompt: str) -> dict[str, Any]:
        """The JSON body of ``POST /images/generations`` for ``prompt``."""
        family = _family(self.model)
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": 1, "size": self.size}
        quality = self.quality or (_FAMILIES[family][2] if family else "")
        if quality:
            body["quality"] = quality
        if family != "gpt-image":
            # GPT image models always return base64 and reject this key; DALL·E defaults to URLs
            body["response_format"] = "b64_json"
        return body


def _family(model: str) -> str | None:
    name = model.rsplit("/", 1)[-1].lower()
    return next((f for f in _FAMILIES if name.startswith(f)), None)


def load_settings(app: Any) -> ImagineSettings:
    """Validate ``[plugins.imagine]`` (raises :class:`ConfigError` naming the key)."""
    try:
        return ImagineSettings.model_validate(app.config.plugins.settings("imagine"))
    except ValidationError as exc:
        problems = "; ".join(
            f"[plugins.imagine{''.join('.' + str(p) for p in err['loc'])}] {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems, path=app.config.source) from None


def _provider_name(app: Any, settings: ImagineSettings) -> str:
    config = app.config
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


# ── the images API ──────────────────────────────────────────────────────────────────────────


async def generate(app: Any, settings: ImagineSettings, prompt: str) -> tuple[bytes, str, Usage | None]:
    """``(png bytes, provider name, usage)`` for ``prompt``. Raises ProviderError subclasses
    whose ``user_message`` is safe to show (content policy refusals say so)."""
    name = _provider_name(app, settings)
    cfg = app.providers[name].config  # the validated [providers.NAME] of the running provider
    base_url = str(cfg.base_url).rstrip("/")
    url = base_url + "/images/generations"
    headers = {"User-Agent": "relaybot", **dict(getattr(cfg, "extra_headers", {}) or {})}
    if cfg.api_key is not None and cfg.api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
    if getattr(cfg, "organization", None):
        headers["OpenAI-Organization"] = cfg.organization
    connect = float(getattr(cfg, "connect_timeout", 10.0))
    timeout = httpx.Timeout(connect=connect, read=settings.timeout, write=30.0, pool=connect)
    where = f"{name}: POST {httpx.URL(url).copy_with(query=None)}"
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=True) as client:
            response = await client.post(url, json=settings.body(prompt), headers=headers)
            if response.is_error:
                raise _status_error(name, where, response)
            item, usage = _first_image(name, where, response)
            if item.get("b64_json"):
                return base64.b64decode(item["b64_json"]), name, usage
            # a URL answer (compatible servers): fetched without our API key
            download = await client.get(str(item["url"]))
            download.raise_for_status()
            return download.content, name, usage
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(
            f"{where}: no image within {settings.timeout:g} s ({type(exc).__name__})",
            provider=name,
            user_message="Generating the image took too long. Please try again.",
        ) from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(
            f"{where}: {type(exc).__name__}", provider=name, user_message=_BUSY
        ) from None


_BUSY = "The image service is unavailable right now. Please try again shortly."


def _first_image(name: str, where: str, response: httpx.Response) -> tuple[dict[str, Any], Usage | None]:
    try:
        doc = response.json()
        item = doc["data"][0]
        if not isinstance(item, dict) or not (item.get("b64_json") or item.get("url")):
            raise TypeError("no b64_json or url")
    except (ValueError, LookupError, TypeError) as exc:
        raise ProviderError(
            f"{where}: unexpected answer ({type(exc).__name__}: {str(exc)[:120]})",
            provider=name,
            user_message="The image service sent a broken answer. Please try again.",
        ) from None
    raw = doc.get("usage") if isinstance(doc, dict) else None
    usage = None
    if isinstance(raw, dict) and ("input_tokens" in raw or "output_tokens" in raw):
        usage = Usage(int(raw.get("input_tokens") or 0), int(raw.get("output_tokens") or 0))
    return item, usage


def _status_error(name: str, where: str, response: httpx.Response) -> ProviderError:
    status = response.status_code
    try:
        error = response.json().get("error") or {}
        message, code = str(error.get("message") or ""), str(error.get("code") or "")
    except (ValueError, AttributeError):
        message, code = response.text[:300], ""
    detail = f"{where} failed with HTTP {status}: {message[:300]}"
    if status == 400 and (code in _POLICY_CODES or "safety system" in message.lower()):
        return ProviderError(
            detail,
            provider=name,
            status=status,
            user_message="I can't create that image: the provider's safety system rejected the prompt. "
            "Try describing it differently.",
        )
    if status in (401, 403):
        return ProviderAuthError(detail, provider=name, status=status)
    if status == 404:
        return ProviderNotFoundError(
            detail,
            provider=name,
            status=status,
            user_message="The configured image model was not found. An admin has to fix [plugins.imagine].",
        )
    if status == 429:
        retry = _retry_after(response)
        wait = f" in about {retry:.0f} s" if retry else " in a minute"
        return ProviderRateLimitError(
            detail,
            retry_after=retry,
            provider=name,
            status=status,
            user_message=f"The image service is busy (rate limited). Please try again{wait}.",
        )
    if status >= 500:
        return ProviderUnavailableError(detail, provider=name, status=status, user_message=_BUSY)
    return ProviderError(
        detail,
        provider=name,
        status=status,
        user_message="The image service refused the request. An admin can find the reason in the log.",
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# ── the command ─────────────────────────────────────────────────────────────────────────────

#: chats with an image being generated, per running bot (one at a time per chat)
_busy: weakref.WeakKeyDictionary[Any, set[ChatKey]] = weakref.WeakKeyDictionary()


async def imagine(ctx: CommandContext) -> None:
    """Generate an image for ``ctx.args`` and post it (see the module docstring)."""
    app = ctx.app
    prompt = ctx.args.strip()
    if not prompt:
        raise CommandError("Describe the picture, e.g. /imagine a lighthouse at dawn, watercolour")
    try:
        settings = load_settings(app)
        _provider_name(app, settings)
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
    busy = _busy.setdefault(app, set())
    if chat in busy:
        raise CommandError("I'm still working on the previous picture here. One at a time, please.")
    busy.add(chat)
    try:
        await _imagine(ctx, settings, prompt)
    finally:
        busy.discard(chat)


async def _imagine(ctx: CommandContext, settings: ImagineSettings, prompt: str) -> None:
    app = ctx.app
    chat = ctx.message.chat
    connector = app.connectors[chat.platform]
    name = _provider_name(app, settings)
    # budgets: the image's worst case is reserved before the request and settled after it
    call = PlannedCall(
        provider=name,
        model=settings.model,
        kind="image",
        origin=RequestOrigin(chat, ctx.message.user.id),
        prompt=prompt,
        image_size=settings.size,
    )
    typing: asyncio.Task[None] | None = None
    try:
        async with app.providers[name].guarded(call) as spend:
            await ctx.reply(_PROGRESS)
            typing = asyncio.create_task(_keep_typing(connector, chat))
            png, provider, usage = await generate(app, settings, prompt)
            spend.usage, spend.images = usage, 1
    except ProviderError as exc:
        log.warning("/imagine failed in %s: %s", chat, exc)
        await ctx.reply("⚠️ " + exc.user_message)
        return
    finally:
        if typing is not None:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
    ref = await app.media.save(png, mime_type="image/png")
    reply_id = await _store(ctx, prompt, ref, provider, settings.model, usage)
    try:
        platform_id = await _send_image(connector, chat, png, prompt)
    except NotImplementedError:
        await ctx.reply(
            "The picture is ready and saved in this conversation, but this chat cannot show images."
        )
        return
    await app.store.link_platform_message(chat, platform_id, reply_id)


async def _keep_typing(connector: Any, chat: ChatKey) -> None:
    """Show "typing…" until cancelled (best effort: a failing indicator is no failure)."""
    while True:
        with contextlib.suppress(Exception):
            await connector.send_typing(chat)
        await asyncio.sleep(TYPING_EVERY)


async def _store(
    ctx: CommandContext, prompt: str, ref: Any, provider: str, model: str, usage: Usage | None
) -> int:
    """Add "/imagine prompt" and the image (with the prompt as caption) to the active conversation."""
    store = ctx.app.store
    chat = ctx.message.chat
    conversation = await store.active_conversation(chat)
    if conversation is None:
        conversation = await store.create_conversation(chat, prompt[:48], activate=True)
    user_row = await store.add_message(
        conversation.id, role=Role.USER, parts=[TextPart(f"/imagine {prompt}")], user_id=ctx.message.user.id
    )
    if ctx.message.platform_message_id:
        await store.link_platform_message(chat, ctx.message.platform_message_id, user_row.id)
    reply = await store.add_message(
        conversation.id,
        role=Role.ASSISTANT,
        parts=[ImagePart(ref), TextPart(prompt)],
        parent_id=user_row.id,
        user_id=ctx.message.user.id,
        provider=provider,
        model=model,
    )
    if usage is not None:
        await store.update_message(reply.id, usage=usage)
    return int(reply.id)


async def _send_image(connector: Any, chat: ChatKey, png: bytes, caption: str) -> str:
    """Send the image; one wait-and-retry when the platform rate-limits us."""
    try:
        return str(await connector.send_image(chat, png, caption=caption, mime_type="image/png"))
    except PlatformRateLimitError as exc:
        if exc.retry_after > _MAX_PLATFORM_WAIT:
            raise
        await asyncio.sleep(exc.retry_after)
        return str(await connector.send_image(chat, png, caption=caption, mime_type="image/png"))


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    # not ordered: the chat stays usable while the picture is drawn
    register(
        Command("imagine", "draw a picture from a description", imagine, usage="<description>", ordered=False)
    )


@hookimpl
def relaybot_startup(app):  # type: ignore[no-untyped-def]
    # A broken [plugins.imagine] is reported at start-up, not first when someone uses /imagine.
    if "imagine" in (app.config.plugins.model_extra or {}):
        try:
            _provider_name(app, load_settings(app))
        except ConfigError as exc:
            log.error("/imagine will not work: %s", exc)
