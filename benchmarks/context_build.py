"""Benchmark: build the model context for a 10,000-message conversation.

Design goal: ≤ 5 ms per build on 2 cores, with token counts cached per message (computed once
at store time, as the storage layer does). Two scenarios:

- ``typical`` (the headline ``p50_ms``/``p99_ms``): a 128k-token window, so only the newest
  part of the 10,000 messages fits and most are dropped;
- ``all_fit``: a 10M-token window, so all 10,000 messages are kept and converted — the worst
  case for the walk and the conversion.

The p99 with default GC settings includes CPython's full (generation 2) collections, which
traverse the whole heap (here ~60k objects, the 10,000 messages included) and land on whatever
code runs at that moment. To separate the builder's own cost from collector pauses, the typical
scenario is timed a second time with the collector paused (``*_gc_paused``), and the result
reports how many full collections ran and what one costs on this heap (``full_gc_ms``).

Run: ``.venv/bin/python benchmarks/context_build.py [--runs N]``. Prints a short table, then one
JSON object as the last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from dataclasses import dataclass

from relaybot.core.contracts.models import ChatKey, ChatMessage, ContentPart, Role
from relaybot.core.modelio.context import build_context
from relaybot.core.modelio.tokens import TokenCounter, counter_for

MESSAGES = 10_000
SYSTEM = "You are a helpful assistant. Answer briefly and cite sources when you can."
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex boxing".split()


@dataclass(slots=True)
class StoredLike:
    """What the storage layer hands to build_context: role, parts and the cached count."""

    role: Role
    parts: list[ContentPart]
    token_count: int


def synthetic_history(counter: TokenCounter, n: int, seed: int = 7) -> list[StoredLike]:
    """``n`` alternating user/assistant messages of 5–400 words, counted once (as at store)."""
    rng = random.Random(seed)
    history = []
    for i in range(n):
        role = Role.USER if (n - 1 - i) % 2 == 0 else Role.ASSISTANT
        length = rng.randint(5, 40) if role is Role.USER else rng.randint(20, 400)
        msg = ChatMessage.text(role, " ".join(rng.choice(WORDS) for _ in range(length)))
        history.append(StoredLike(role, msg.parts, counter.count_message(msg)))
    return history


def time_builds(
    history: list[StoredLike],
    counter: TokenCounter,
    window: int,
    runs: int,
    *,
    pause_gc: bool = False,
) -> tuple[list[float], int]:
    """Milliseconds per build_context call, and how many messages the last build kept.

    With ``pause_gc`` the collector is off inside each timed call and runs between calls.
    """
    chat = ChatKey("bench", "1")
    kept = 0
    for _ in range(20):  # warm-up: system prompt count cached, code paths hot
        build_context(
            chat, None, SYSTEM, history, counter=counter, context_window=window, max_output_tokens=4096
        )
    samples = []
    for _ in range(runs):
        if pause_gc:
            gc.collect(0)
            gc.disable()
        t0 = time.perf_counter_ns()
        draft = build_context(
            chat, None, SYSTEM, history, counter=counter, context_window=window, max_output_tokens=4096
        )
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if pause_gc:
            gc.enable()
        kept = len(draft.messages)
    return samples, kept


def count_full_collections() -> list[int]:
    """A list that grows by one for every generation-2 collection from now on."""
    full: list[int] = []
    gc.callbacks.append(
        lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None
    )
    return full


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()

    counter = counter_for(None, "gpt-4o")
    t0 = time.perf_counter()
    history = synthetic_history(counter, MESSAGES)
    setup_s = time.perf_counter() - t0

    gc.collect()
    t0 = time.perf_counter()
    gc.collect()
    full_gc_ms = (time.perf_counter() - t0) * 1e3

    full = count_full_collections()
    typical, typical_kept = time_builds(history, counter, 128_000, args.runs)
    typical_full_gcs = len(full)
    paused, _ = time_builds(history, counter, 128_000, args.runs, pause_gc=True)
    all_fit, all_fit_kept = time_builds(history, counter, 10_000_000, max(args.runs // 4, 50))

    for label, samples, kept in (
        ("typical (128k window)", typical, typical_kept),
        ("typical, GC paused", paused, typical_kept),
        ("all fit (10M window)", all_fit, all_fit_kept),
    ):
        print(
            f"{label:24} kept {kept:>6}  p50 {percentile(samples, 0.5):7.3f} ms  "
            f"p99 {percentile(samples, 0.99):7.3f} ms  mean {statistics.fmean(samples):7.3f} ms"
        )
    print(f"full GCs during typical runs: {typical_full_gcs}, one full GC: {full_gc_ms:.2f} ms")
    print(f"setup: counted {MESSAGES} messages with {counter!r} in {setup_s:.2f} s")
    result = {
        "benchmark": "context_build",
        "messages": MESSAGES,
        "runs": len(typical),
        "p50_ms": round(percentile(typical, 0.5), 4),
        "p99_ms": round(percentile(typical, 0.99), 4),
        "kept": typical_kept,
        "p50_ms_gc_paused": round(percentile(paused, 0.5), 4),
        "p99_ms_gc_paused": round(percentile(paused, 0.99), 4),
        "full_gc_runs": typical_full_gcs,
        "full_gc_ms": round(full_gc_ms, 3),
        "all_fit_p50_ms": round(percentile(all_fit, 0.5), 4),
        "all_fit_p99_ms": round(percentile(all_fit, 0.99), 4),
        "all_fit_kept": all_fit_kept,
        "goal_ms": 5.0,
        "counter": counter.name,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
