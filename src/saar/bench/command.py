"""The ``saar bench`` subcommand: ``saar bench matrix|live|hotpath [--small] [--out DIR]``.

``register(subparsers)`` adds it to the ``saar`` CLI; ``python -m saar.bench`` runs the same
parser on its own. Each benchmark writes JSON and Markdown (and plots or a profile) under
``--out`` (default ``bench/results``) and prints the Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "register", "run"]


def _default_out() -> Path:
    from saar.bench.live import repo_root  # noqa: PLC0415 - keep `saar --help` fast

    return repo_root() / "bench" / "results"


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark; exit 0 when it ran (targets are reported, not enforced)."""
    out = Path(args.out) if args.out else _default_out()
    doc: dict[str, Any]
    if args.which == "matrix":
        from saar.bench.matrix import main_matrix  # noqa: PLC0415

        doc = main_matrix(args.small, out)
    elif args.which == "live":
        from saar.bench.live import main_live  # noqa: PLC0415

        doc = main_live(args.small, out)
    else:
        from saar.bench.hotpath import main_hotpath  # noqa: PLC0415

        doc = main_hotpath(args.small, out)
    files = [str(f) for f in doc.get("files", [])]
    md = next((f for f in files if f.endswith(".md")), None)
    if md is not None:
        print(Path(md).read_text())
    print("wrote:", ", ".join(files))
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "which",
        choices=("matrix", "live", "hotpath"),
        help="matrix: pure policy over seeded sessions; live: sessions through Envoy + saar + "
        "emulator; hotpath: latency added over Envoy alone",
    )
    parser.add_argument("--small", action="store_true", help="CI size (seconds, not minutes)")
    parser.add_argument("--out", help="results directory (default bench/results)")
    parser.set_defaults(func=run)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` to a ``saar`` subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run a benchmark (matrix, live, hotpath); results under bench/results"
    )
    _add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (``python -m saar.bench``)."""
    parser = argparse.ArgumentParser(prog="saar bench", description=__doc__)
    _add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m saar.bench``."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
