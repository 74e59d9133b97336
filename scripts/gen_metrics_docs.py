"""Generate docs/reference/metrics.md from saar's declared metrics (``--check``: fail if stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from saar.observability.metrics import Metrics  # noqa: E402

TARGET = ROOT / "docs" / "reference" / "metrics.md"


def render() -> str:
    """The metrics reference as Markdown."""
    lines = [
        "# Metrics reference",
        "",
        "Generated from `src/saar/observability/metrics.py` by `scripts/gen_metrics_docs.py`;",
        "do not edit by hand. saar serves them on `server.metrics_address` (`/metrics`).",
        "",
        "| metric | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    for info in Metrics().describe():
        labels = ", ".join(f"`{label}`" for label in info.labels) or "-"
        lines.append(f"| `{info.name}` | {info.kind} | {labels} | {info.help} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write the reference, or with ``--check`` exit 1 when the committed one is stale."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run scripts/gen_metrics_docs.py")
            return 1
        print(f"{TARGET.relative_to(ROOT)} is current")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
