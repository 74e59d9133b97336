"""DecisionTrace: everything needed to explain (and replay) one decision, in one unit.

Theory of operation: the policy fills one ``DecisionTrace`` per decision; headers, metrics,
logs and replay rows are derived from it and never recomputed (ARCHITECTURE rule 7). All
economic terms are in **utility points** (``u``, docs/design/0002): quality points times the
decision's ``quality_weight``; currency is converted with ``cost_weight / max_cost`` where
``max_cost`` is the base selector's normaliser for this request. ``to_dict`` gives a
JSON-serialisable dict with stable keys for the replay store.
"""

from __future__ import annotations

from dataclasses import dataclass

from saar.policy.selector import CandidateScore

__all__ = ["DecisionTrace", "SwitchTerms"]

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True, slots=True)
class SwitchTerms:
    """One candidate's switch economics relative to the current model, in utility points."""

    physical: str
    quality_gain: float
    """``quality_gap_multiplier * quality_weight * gap(current→candidate)`` per turn."""
    horizon: float
    """Turns the per-turn gains are credited for: this turn plus the expected persistence."""
    turn_cost_delta: float
    """This turn's cost difference, warm current vs. the candidate's cache-steady price."""
    future_cost_delta: float
    """Per-turn steady-state cost difference, times the future part of the horizon."""
    checkout: float
    """Prefix-cache checkout: warm prefix re-prefilled at full price (times prefix_cache_weight)."""
    handoff: float
    history: float
    continuity: float
    stay_bias: float
    net: float
    """Total: positive means switching to this candidate is worth it."""

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON-serialisable form."""
        return {
            "physical": self.physical,
            "quality_gain": self.quality_gain,
            "horizon": self.horizon,
            "turn_cost_delta": self.turn_cost_delta,
            "future_cost_delta": self.future_cost_delta,
            "checkout": self.checkout,
            "handoff": self.handoff,
            "history": self.history,
            "continuity": self.continuity,
            "stay_bias": self.stay_bias,
            "net": self.net,
        }


@dataclass(frozen=True, slots=True)
class DecisionTrace:
    """Why one request went where it went."""

    decision: str
    base_method: str
    base_choice: str
    base_scores: tuple[CandidateScore, ...]
    action: str
    reason: str
    mode: str
    scope: str
    phase: str
    decision_source: str = "signals"
    """``signals`` (matched), ``session`` (no signal matched: kept the session's decision)
    or ``default`` (no signal matched and no session decision)."""
    current: str | None = None
    """The session's model before this turn (committed, else pending)."""
    proposed: str | None = None
    """What the session-aware layer chose (routed unless mode is observe)."""
    target: str | None = None
    """What was routed."""
    lock_owner: str | None = None
    protected_key: str | None = None
    turn_count: int = 0
    switch_count: int = 0
    recent_switches: float = 0.0
    """Switch history weight: recent switches decayed with the idle timeout as time scale."""
    idle_for: float | None = None
    idle_reset: bool = False
    decision_drift: bool = False
    failures: int = 0
    """Consecutive failures of the current backend."""
    warmth: float = 0.0
    """Fraction of the current prefix expected to be cached now (evidence times decay)."""
    cache_hit_ratio: float = 0.0
    """The session's last observed cached/prompt ratio (or the prior)."""
    cache_evidence: bool = False
    expected_remaining_turns: float = 0.0
    remaining_turns_source: str = ""
    utility_per_currency: float = 0.0
    """``cost_weight / max_cost``: how currency converts to utility points for this request."""
    candidates: tuple[SwitchTerms, ...] = ()

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON-serialisable form for replay (stable keys; floats as is)."""
        return {
            "decision": self.decision,
            "decision_source": self.decision_source,
            "base_method": self.base_method,
            "base_choice": self.base_choice,
            "base_scores": [
                {
                    "physical": s.physical,
                    "quality": s.quality,
                    "expected_cost": s.expected_cost,
                    "score": s.score,
                }
                for s in self.base_scores
            ],
            "action": self.action,
            "reason": self.reason,
            "mode": self.mode,
            "scope": self.scope,
            "phase": self.phase,
            "current": self.current,
            "proposed": self.proposed,
            "target": self.target,
            "lock_owner": self.lock_owner,
            "protected_key": self.protected_key,
            "turn_count": self.turn_count,
            "switch_count": self.switch_count,
            "recent_switches": self.recent_switches,
            "idle_for": self.idle_for,
            "idle_reset": self.idle_reset,
            "decision_drift": self.decision_drift,
            "failures": self.failures,
            "warmth": self.warmth,
            "cache_hit_ratio": self.cache_hit_ratio,
            "cache_evidence": self.cache_evidence,
            "expected_remaining_turns": self.expected_remaining_turns,
            "remaining_turns_source": self.remaining_turns_source,
            "utility_per_currency": self.utility_per_currency,
            "candidates": [c.to_dict() for c in self.candidates],
        }
