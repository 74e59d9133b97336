"""The policy's verdict for one request, and the trace every adapter reports from.

Theory of operation: ``policy.decide`` returns one ``Decision``. The ext_proc adapter turns it
into the cluster header, the affinity key and the body ``model``; headers, metrics, logs and
replay rows are all derived from ``Decision.trace`` and never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

from saar.policy.config import PhysicalModel

__all__ = ["Decision"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes, and why."""

    replay_id: str
    """Equal to ``RequestFacts.request_id``; returned to the client as ``x-vsr-replay-id``."""
    decision_name: str
    """The matched routing decision."""
    target: PhysicalModel
    """The physical model that serves the request (after session-aware adaptation)."""
    base: PhysicalModel
    """What the base selector alone would have chosen."""
    affinity_key: str
    """Cache-affinity key: Envoy's consistent hash keeps the session on one warm replica."""
