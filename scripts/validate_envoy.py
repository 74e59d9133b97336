"""Run ``envoy --mode validate`` on every Envoy config in envoy/ (CI runs this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from saar.stack import envoy_binary  # noqa: E402


def main() -> int:
    """Validate each file; print one line per file; exit 1 on the first failure."""
    configs = sorted((ROOT / "envoy").glob("*.yaml"))
    if not configs:
        print("no Envoy configs in envoy/", file=sys.stderr)
        return 1
    for config in configs:
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "error"],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if result.returncode != 0:
            print(f"{config.relative_to(ROOT)}: INVALID\n{result.stdout}{result.stderr}")
            return 1
        print(f"{config.relative_to(ROOT)}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
