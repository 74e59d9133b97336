"""Fuzz budgets: small and fixed in CI, raised with ``SAAR_FUZZ_EXAMPLES`` for a long run.

CI runs every fuzz test derandomized (the same examples each run, so a failure reproduces);
``SAAR_FUZZ_EXAMPLES=20000 SAAR_FUZZ_RANDOM=1`` explores new examples (docs/hardening.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["budget"]


def budget(default: int) -> settings:
    """Hypothesis settings with ``default`` examples unless the environment raises it."""
    examples = int(os.environ.get("SAAR_FUZZ_EXAMPLES", default))
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not os.environ.get("SAAR_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )
