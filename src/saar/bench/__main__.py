"""``python -m saar.bench matrix|live|hotpath [--small]`` (same as ``saar bench``)."""

from saar.bench.command import main

raise SystemExit(main())
