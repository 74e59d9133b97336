"""The stand-alone bench scripts, small: each runs as a user runs it and writes its results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.dataplane


def _run(*argv: str, timeout: float = 240.0) -> str:
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_ab_response_learning_small_measures_latency_and_cpu_per_chunk(tmp_path: Path) -> None:
    """Both sides stream through Envoy; saar CPU per answer and per chunk are reported."""
    _run(
        "bench/ab_latency.py",
        "response-learning",
        "--small",
        "--rounds",
        "1",
        "--out",
        str(tmp_path),
    )
    doc = json.loads((tmp_path / "ab-response-learning-small.json").read_text())
    on, off = doc["median_of_rounds"]["on"], doc["median_of_rounds"]["off"]
    for side in (on, off):
        assert side["ttfb_p50_ms"] > 0
        assert side["chunks_per_stream"] > 1  # SSE answers arrive in many reads
        assert side["saar_cpu_us_per_stream"] >= 0
    # Observing every chunk costs saar work that not observing does not.
    assert on["saar_cpu_us_per_stream"] > off["saar_cpu_us_per_stream"]
    assert "per observed chunk" in (tmp_path / "ab-response-learning-small.md").read_text()


def test_ab_replay_small_reports_both_sides(tmp_path: Path) -> None:
    """Replay on vs off: latency percentiles for both sides and their ratio."""
    _run("bench/ab_latency.py", "replay", "--small", "--rounds", "1", "--out", str(tmp_path))
    doc = json.loads((tmp_path / "ab-replay-small.json").read_text())
    for side in ("on", "off"):
        row = doc["median_of_rounds"][side]
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert doc["ratio_on_over_off"]["p50_ms"] > 0


def test_session_memory_small_measures_each_layer(tmp_path: Path) -> None:
    """Bytes per 20-turn session encoded, in-process and in Redis, all plausible."""
    out = tmp_path / "session_memory.json"
    _run("bench/session_memory.py", "--sessions", "200", "--out", str(out))
    doc = json.loads(out.read_text())
    assert doc["turns"] == 20
    assert 100 < doc["encoded_bytes"] < 4096
    assert doc["encoded_bytes"] <= doc["in_process_bytes_per_session"] < 16384
    assert 0 < doc["redis_bytes_per_session"] < 16384
