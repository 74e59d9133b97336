"""CPU idle states for the hot-path benchmark: count idle entries, and hold the CPUs out of halt.

Theory of operation. At 200 requests/s the benchmark box is idle most of the time, and an idle
CPU halts (on a VM: the vCPU exits to the hypervisor). Measured on the 2-vCPU benchmark VM, code
that runs right after a halt runs ~1.5x slower than on a CPU that never stopped (caches, host
frequency), for Envoy, saar and the load generator alike. That is a property of the node, not
of saar, so the benchmark measures it beside the headline rather than hiding it: one extra step
runs with Linux's PM QoS CPU latency request (``/dev/cpu_dma_latency``) held at 0 µs, which is
what the ``latency-performance`` tuned profile does on latency-sensitive nodes. While the file
is open, cpuidle only enters states with zero exit latency (the poll state); closing it (or the
process exiting) drops the request. The idle-entry counters in sysfs show whether it took hold.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType
from typing import Final

__all__ = ["CPU_LATENCY_DEVICE", "CpuLatencyHold", "halt_entries"]

CPU_LATENCY_DEVICE: Final = Path("/dev/cpu_dma_latency")
"""The PM QoS CPU latency request file (root only on most systems)."""
_CPUS: Final = Path("/sys/devices/system/cpu")
_POLL: Final = "POLL"


def halt_entries(cpus: Path = _CPUS) -> int | None:
    """Idle entries into a state that stops the CPU (any state but ``POLL``), all CPUs summed.

    ``None`` where the kernel exposes no cpuidle states (no counter to read).
    """
    total = 0
    seen = False
    for state in cpus.glob("cpu[0-9]*/cpuidle/state[0-9]*"):
        try:
            name = (state / "name").read_text().strip()
            usage = int((state / "usage").read_text())
        except (OSError, ValueError):
            continue
        seen = True
        if name != _POLL:
            total += usage
    return total if seen else None


class CpuLatencyHold:
    """While entered, ask the kernel for 0 µs CPU wake-up latency: idle CPUs poll, not halt.

    ``unavailable`` says why it cannot be held here (``None`` when it can); entering an
    unavailable hold raises ``OSError``.
    """

    def __init__(self, device: Path = CPU_LATENCY_DEVICE) -> None:
        self._device = device
        self._fd: int | None = None

    @property
    def unavailable(self) -> str | None:
        """Why the request cannot be made on this machine, or ``None`` if it can."""
        if not self._device.exists():
            return f"{self._device} does not exist (no PM QoS CPU latency interface)"
        if not os.access(self._device, os.W_OK):
            return f"{self._device} is not writable by this user (it needs root)"
        return None

    def __enter__(self) -> CpuLatencyHold:
        """Make the request; ``OSError`` if this machine does not allow it."""
        fd = os.open(self._device, os.O_WRONLY)
        try:
            # A native 32-bit integer in microseconds; the request lasts while fd is open.
            os.write(fd, struct.pack("=i", 0))
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Drop the request: idle CPUs may halt again."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
