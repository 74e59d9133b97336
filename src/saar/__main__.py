"""``python -m saar`` runs the ``saar`` command line."""

from saar.cli import main

raise SystemExit(main())
