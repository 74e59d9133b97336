"""``saar serve``'s file watcher follows the priors file that the live settings name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from saar.app import _watch


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_priors_file_named_by_a_reload_is_watched(tmp_path: Path) -> None:
    """No priors.path at start; a reload sets it; rebuilding that file reloads again."""
    config = tmp_path / "saar.yaml"
    config.write_text("replay: {}\n")
    priors = tmp_path / "priors.json"
    priors.write_text("{}\n")
    named: list[Path] = []  # priors.path of the live settings
    reasons: list[str] = []
    task = asyncio.create_task(_watch(lambda: [config, *named], 0.01, reasons.append))
    try:
        await asyncio.sleep(0.05)
        assert reasons == []
        named.append(priors)  # a SIGHUP reload applied a config with priors.path
        await until(lambda: len(reasons) == 1)
        priors.write_text('{"version": 1}\n')  # `saar priors build` rewrote the file
        await until(lambda: len(reasons) == 2)
        await asyncio.sleep(0.05)
        assert reasons == ["file_changed", "file_changed"]
        named.clear()  # priors.path removed: the old file is no longer watched
        await until(lambda: len(reasons) == 3)
        priors.write_text('{"version": 1, "records": 0}\n')
        await asyncio.sleep(0.05)
        assert len(reasons) == 3
    finally:
        task.cancel()
