"""The replay store under a full disk, in a child process whose file size limit is tiny.

RLIMIT_FSIZE makes every write past the limit fail with EFBIG (Python ignores SIGXFSZ), the
same error path as a full disk, without needing a small filesystem or root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import resource, sqlite3, sys
sys.path.insert(0, sys.argv[2])
from replay_builders import synthetic
from saar.replay.recorder import _classify
from saar.replay.store import SqliteReplayStore

store = SqliteReplayStore(sys.argv[1])
store.write([synthetic("r0", "k", 1.0, "qwen3-8b@mi300-small")], [])
limit = 64 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
for batch in range(1, 400):
    records = [synthetic(f"r{batch}-{i}", "k", 1.0, "qwen3-8b@mi300-small") for i in range(50)]
    try:
        store.write(records, [])
    except sqlite3.Error as exc:
        print(_classify(exc), "|", exc)
        break
else:
    print("never failed")
"""


def run_child(db: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(ROOT / "tests" / "replay")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    return result.stdout.strip()


def test_replay_store_surfaces_a_full_disk_as_an_error(tmp_path: Path) -> None:
    """A write that cannot grow the file raises sqlite3.Error (the recorder drops and counts)."""
    out = run_child(tmp_path / "replay.sqlite3")
    assert "never failed" != out
    assert out.split(" | ")[0] in {"disk_full", "db_error"}, out


def test_replay_store_classifies_disk_full(tmp_path: Path) -> None:
    """A full disk is reported (and its drops labelled) as disk_full, not db_error."""
    out = run_child(tmp_path / "replay.sqlite3")
    assert out.startswith("disk_full"), out
