"""``saar.stack.ChildProcess``: readiness is read from this start's output only."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from saar.stack import ChildProcess


async def test_a_restart_does_not_see_the_previous_runs_ready_line(tmp_path: Path) -> None:
    """A retried stack reuses its log file; the old ready line must not pass for the new one."""
    log = tmp_path / "child.log"
    log.write_text("previous run\nsaar ready: ext_proc on unix:/old.sock\n")
    script = "import time; time.sleep(0.4); print('saar ready: new', flush=True); time.sleep(5)"
    child = ChildProcess("saar", [sys.executable, "-c", script], log, tmp_path)
    child.start()
    try:
        started = asyncio.get_running_loop().time()
        await child.wait_for_output("saar ready", timeout_s=10.0)
        assert asyncio.get_running_loop().time() - started >= 0.3
        assert "previous run" in child.output()  # the earlier log is kept, above
    finally:
        await child.stop(grace_s=1.0)
