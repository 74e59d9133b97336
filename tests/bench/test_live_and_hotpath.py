"""Live sessions and the hot path, small: real Envoy + saar (+ emulator) processes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from saar.bench.command import register
from saar.bench.cpuidle import CpuLatencyHold
from saar.bench.hotpath import capacity, main_hotpath
from saar.bench.live import LiveOptions, run_live
from saar.replay.recorder import WRITER_THREAD_NAME

pytestmark = pytest.mark.dataplane


async def test_live_small_keeps_continuity_and_recovers() -> None:
    """No continuity violation with saar, every faulted session recovers, the checker can fire."""
    doc = await run_live(LiveOptions.small())
    summary = doc["summary"]
    assert 0 == summary["violations"]
    assert summary["affected_sessions"] > 0
    assert summary["affected_sessions"] == summary["recovered_sessions"]
    assert summary["control_violations_without_saar"] > 0
    clean = doc["passes"][0]
    assert clean["continuity"]["tool_results_checked"] > 0
    assert clean["continuity"]["continuations_checked"] > 0


@pytest.mark.timeout(90)
def test_hotpath_small_writes_ratios(tmp_path: Path) -> None:
    """Every stack answers (saar, and each floor: grpc.aio and h2), added latency and ratios
    are computed, files are written."""
    doc = main_hotpath(True, tmp_path)
    summary = doc["summary"]
    floors = [
        f"{name}/20k/{mode}"
        for name in ("floor", "floor2", "floor2-h2")
        for mode in ("rate", "sat")
    ]
    for key in ("plain/20k/rate", "saar/20k/rate", "saar/20k/sat", *floors):
        assert summary[key]["throughput"] > 0
        assert 0 == summary[key]["errors"]
    assert summary["added/20k/rate"]["ratio_saar_over_plain"]["p50"] > 0
    assert doc["policy_decisions_per_s"]["decide"] > 0
    # The writer process's CPU is measured apart from the event loop's (capacity per core).
    cap = doc["capacity"]
    assert cap["writer_us_per_request"] > 0
    assert cap["loop_us_per_request"] + cap["writer_us_per_request"] == pytest.approx(
        summary["saar/20k/sat"]["cpu_us_per_request"]["saar"], abs=0.2
    )
    md = (tmp_path / "hotpath-small.md").read_text()
    assert "| 2 msgs, h2 |" in md
    assert f"**{cap['decisions_per_s_per_loop_core']:,}/s**" in md
    for name in ("hotpath-small.json", "hotpath-small.md", "hotpath-small-profile.txt"):
        assert (tmp_path / name).stat().st_size > 0
    _assert_idle_state_diagnostic(doc, md)


def _assert_idle_state_diagnostic(doc: dict[str, Any], md: str) -> None:
    """The 20 KB step runs again with idle CPUs polling where the hold is possible."""
    summary = doc["summary"]
    reason = CpuLatencyHold().unavailable
    if reason is not None:
        assert doc["body_bytes"]["cpu_latency_hold"] == reason
        assert f"Idle-state diagnostic not run: {reason}." in md
        assert "saar/20k/poll" not in summary
        return
    assert doc["body_bytes"]["cpu_latency_hold"] == "held"
    for name in ("plain", "saar", "floor2-h2"):
        assert summary[f"{name}/20k/poll"]["throughput"] > 0
        assert 0 == summary[f"{name}/20k/poll"]["errors"]
    assert summary["added/20k/poll"]["ratio_saar_over_plain"]["p50"] > 0
    # The hold took effect: the CPUs (nearly) stopped halting during the polled steps.
    halting = summary["saar/20k/rate"]["halts_per_s"]
    polled = summary["saar/20k/poll"]["halts_per_s"]
    assert halting > 0
    assert polled <= halting / 10
    assert "| poll |" in md
    assert "With idle CPUs polling (the diagnostic above), saar added" in md


def test_bench_subcommand_registers() -> None:
    """`register` adds `bench matrix|live|hotpath [--small]` to a saar subparsers object."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "matrix", "--small"])
    assert ("matrix", True) == (args.which, args.small)


def test_capacity_per_core_is_the_event_loops_cpu_without_the_writer_process() -> None:
    """1e6 / (saar's CPU per request at saturation - its replay writer's); absent without data."""
    summary = {
        "saar/20k/sat": {
            "cpu_us_per_request": {"saar": 700.0, "envoy": 300.0},
            "saar_threads_us_per_request": {"python3": 600.0, WRITER_THREAD_NAME: 100.0},
        }
    }
    assert capacity(summary) == {
        "loop_us_per_request": 600.0,
        "writer_us_per_request": 100.0,
        "decisions_per_s_per_loop_core": 1667,
    }
    assert capacity({}) == {}
