"""CPU idle counters and the PM QoS hold the hot-path benchmark's idle-state diagnostic uses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from saar.bench.cpuidle import CPU_LATENCY_DEVICE, CpuLatencyHold, halt_entries
from saar.bench.hotpath import _idle_lines


def _state(root: Path, cpu: int, index: int, name: str, usage: int) -> None:
    state = root / f"cpu{cpu}" / "cpuidle" / f"state{index}"
    state.mkdir(parents=True)
    (state / "name").write_text(f"{name}\n")
    (state / "usage").write_text(f"{usage}\n")


def test_halt_entries_sums_every_state_but_poll_over_all_cpus(tmp_path: Path) -> None:
    for cpu in (0, 1):
        _state(tmp_path, cpu, 0, "POLL", 1_000)
        _state(tmp_path, cpu, 1, "haltpoll idle", 7 + cpu)
        _state(tmp_path, cpu, 2, "C6", 100)
    (tmp_path / "cpufreq").mkdir()  # not a CPU: ignored
    assert 7 + 8 + 2 * 100 == halt_entries(tmp_path)


def test_halt_entries_is_none_without_cpuidle(tmp_path: Path) -> None:
    (tmp_path / "cpu0").mkdir()
    assert halt_entries(tmp_path) is None


def test_a_missing_device_is_unavailable_and_says_why(tmp_path: Path) -> None:
    hold = CpuLatencyHold(tmp_path / "cpu_dma_latency")
    assert hold.unavailable is not None
    assert "does not exist" in hold.unavailable
    with pytest.raises(OSError), hold:
        pass


def _halts_while_sleeping(seconds: float) -> int:
    before = halt_entries()
    time.sleep(seconds)
    after = halt_entries()
    assert before is not None
    assert after is not None
    return after - before


def test_the_hold_keeps_idle_cpus_from_halting_on_this_machine() -> None:
    """The real kernel interface: while held, an idle machine stops halting; after, it halts."""
    hold = CpuLatencyHold()
    if hold.unavailable is not None:
        # Not root, or no PM QoS: the benchmark reports this reason instead of the step.
        assert str(CPU_LATENCY_DEVICE) in hold.unavailable
        with pytest.raises(OSError), hold:
            pass
        return
    assert halt_entries() is not None, "cpuidle exposes no states on this machine"
    free = _halts_while_sleeping(0.5)
    with hold:
        held = _halts_while_sleeping(0.5)
    after = _halts_while_sleeping(0.5)
    assert free > 0
    assert after > 0  # the request ends with the file: CPUs halt again
    assert held <= max(5, free // 10)


def test_the_report_says_why_the_idle_state_step_did_not_run() -> None:
    """Where the hold is unavailable the Markdown names the reason instead of a table."""
    reason = "/dev/cpu_dma_latency is not writable by this user (it needs root)"
    lines = _idle_lines({"summary": {}, "body_bytes": {"cpu_latency_hold": reason}})
    assert f"Idle-state diagnostic not run: {reason}." in lines
    assert not any(line.startswith("| poll |") for line in lines)
    # Not requested (``idle_poll=False``): nothing at all.
    assert _idle_lines({"summary": {}, "body_bytes": {}}) == []
