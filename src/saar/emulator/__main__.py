"""``python -m saar.emulator --config FILE``: the ``saar emulate`` command without the CLI."""

from __future__ import annotations

import sys

from saar.emulator.command import build_parser, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the emulator until SIGINT/SIGTERM."""
    return run(build_parser().parse_args(argv))


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
