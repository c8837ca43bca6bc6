"""The benchmark scripts still run end to end (tiny loads; the speed itself is not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 120) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_streaming_benchmark_delivers_every_reply_through_the_fakes():
    result = run_benchmark(
        "streaming.py", "--chats", "4", "--group-streams", "2", "--tokens", "40", "--rate", "100"
    )
    assert result["replies_completed"] == result["replies_expected"] == 6
    assert result["identical"] and result["platform_429"] == 0
    assert result["provider_streams_peak"] >= 1
    # the lean provider fake kept its pace: 40 tokens at 100/s take about 0.4 s
    assert 0.3 <= result["provider_stream_s_p50"] < 2.0


def test_discord_streaming_benchmark_delivers_every_reply_within_discords_limits():
    result = run_benchmark(
        "streaming.py", "--platform", "discord", "--channels", "1", "--per-channel", "2", "--dms", "1",
        "--tokens", "300", "--rate", "100",
    )  # fmt: skip
    assert result["replies_completed"] == result["replies_expected"] == 3
    assert result["identical"] and result["all_within_limit"] and result["all_fences_balanced"]
    assert result["platform_429"] == 0 and result["split_replies"] == 3


def test_slack_streaming_benchmark_answers_every_thread_once_also_with_lost_acks():
    result = run_benchmark(
        "streaming.py", "--platform", "slack", "--threads", "3", "--dms", "2", "--tokens", "40",
        "--rate", "100", "--lost-acks", "0.5",
    )  # fmt: skip
    assert result["replies"] == result["expected"] == result["identical"] == 5
    assert result["duplicates"] == 0 and result["provider_requests"] == 5
    assert result["platform_429"] == 0 and result["calls_inside_retry_after"] == 0


def test_storage_benchmark_reports_each_call():
    result = run_benchmark("storage.py", "--replies", "20", "--concurrency", "5")
    assert result["replies"] == 20 and result["backend"] == "sqlite"
    assert result["statements_per_reply"] > 10
    assert all(result[f"{name}_ms"] > 0 for name in ("active", "create", "add", "path", "update", "link"))


def test_web_latency_benchmark_measures_every_run():
    result = run_benchmark("web_latency.py", "--runs", "5", "--warmup", "1", "--gap", "0.1")
    assert result["runs"] == 5
    # every run saw its first delta, then its done event, after the POST
    assert 0 < result["p50_ms"] <= result["max_ms"]
    assert result["done_p50_ms"] >= result["p50_ms"]


def test_budgets_benchmark_reserves_and_settles_every_reply():
    result = run_benchmark("budgets.py", "--replies", "20", "--prefill", "50", "--chats", "5", "--users", "3")
    assert result["replies"] == 20 and result["backend"] == "sqlite" and result["budgets"] == 3
    # per reply: a reservation (overrides read, checks, insert) and a settlement
    assert result["statements_per_reply"] >= 4
    assert 0 < result["reserve_ms_p50"] <= result["reserve_ms_p99"]
