"""The policy's verdict for one request, and the trace every adapter reports from.

Theory of operation: ``policy.decide`` returns one ``Decision``. The ext_proc adapter turns it
into the cluster header, the affinity key and the body ``model``; headers, metrics, logs and
replay rows are all derived from ``Decision.trace`` and never recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from saar.policy.config import AdaptationMode, PhysicalModel, Scope
from saar.policy.reasons import Action, Phase, Reason
from saar.policy.trace import DecisionTrace

__all__ = ["Decision"]


def _no_trace() -> DecisionTrace:
    # Only for Decisions built outside ``decide`` (tests, adapters' fail-open path).
    return DecisionTrace(
        decision="",
        base_method="",
        base_choice="",
        base_scores=(),
        action=Action.BYPASS.value,
        reason=Reason.LEARNING_DISABLED.value,
        mode=AdaptationMode.BYPASS.value,
        scope=Scope.CONVERSATION.value,
        phase=Phase.NONE.value,
    )


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
    action: Action = Action.BYPASS
    """What the session-aware layer did (``reasons.ACTIONS``)."""
    reason: Reason = Reason.LEARNING_DISABLED
    """Why (``reasons.REASONS``); always a reason of ``action``."""
    mode: AdaptationMode = AdaptationMode.BYPASS
    scope: Scope = Scope.CONVERSATION
    phase: Phase = Phase.NONE
    trace: DecisionTrace = field(default_factory=_no_trace)
    """The full explanation; ``decide`` always fills it."""
    proposed: PhysicalModel | None = None
    """What the session-aware layer chose; differs from ``target`` only in observe mode."""
    protected_key: str | None = None
    """The router-memory key this request was decided under (``None`` = no session context)."""

    @property
    def switched(self) -> bool:
        """True when the routed model differs from the session's previous model."""
        current = self.trace.current
        return current is not None and current != self.target.key
