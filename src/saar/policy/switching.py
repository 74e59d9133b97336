"""Switch economics: stay unless moving is worth it, priced in one unit.

Theory of operation (docs/design/0002 has the derivation and a worked example).

**Unit.** Utility points ``u``: one quality point is worth ``quality_weight`` u; one currency
unit is worth ``kappa = cost_weight / max_cost`` u, where ``max_cost`` is the base selector's
normaliser for this request (the largest cold cost among the decision's candidates). So the
economics speak the hybrid selector's language, and every term below is in ``u``; nothing is
added in two scales and nothing is counted twice (upstream weaknesses #13, #14, #16).

**Cache.** ``W`` = tokens of this prompt expected to be cached on the current model now
= ``min(T, resident prefix) * ratio * 0.5 ** (age / cache_half_life_seconds)``: the resident
prefix is the last response's prompt on the model that served it, ``ratio`` is *this session's*
learned reuse ratio on warm turns (the prior ``default_cache_hit_ratio`` before one) and
``age`` the time since that response.

**Net value of switching from current ``A`` to candidate ``B``** (each term signed, positive
favours the switch; ``p = remaining_turn_weight``, ``E`` = expected remaining turns prior)::

    Hf         = sum_{k=1..E} (1-p)^k            future turns the per-turn gains persist
    quality    = (1 + Hf) * quality_gap_multiplier * qw * gap(A→B)
    turn_cost  = -kappa * (cost_B(W warm) - cost_A(W warm))         this turn, equal warmth
    checkout   = -prefix_cache_weight * kappa * W * (prompt_B - cached_B)
    future     = -kappa * Hf * (steady_B - steady_A)   steady = cost at the session's ratio
    handoff    = -handoff_penalty_weight * qw * handoff(A→B)
    history    = -switch_history_weight * qw * handoff(A→B) * recent_switches
    continuity = -(1 - (1-p)^E) * (prefix_cache_weight * kappa * T * ratio * (prompt_A - cached_A)
                                   + handoff_penalty_weight * qw * handoff(B→A))
    stay       = -stay_bias * qw
    net        = sum of the above

``turn_cost + checkout`` is exactly this turn's cost difference (cold ``B`` vs warm ``A``) split
into a price part and the cache part, so the prefix is priced once. ``continuity`` is the
expected cost of coming back: with per-turn probability ``p`` the session will want ``A`` again
within its ``E`` remaining turns, and returning re-prefills ``A`` and hands off again; a larger
``remaining_turn_weight`` or a longer expected session therefore values continuity more, as the
published knob describes. At a decision-drift boundary the stickiness terms (stay, handoff,
history, and the handoff part of continuity) are zero but real money (turn cost, checkout,
future cost, the expected re-prefill of coming back) and the quality gap still count, so a drift
does not throw away a hot frontier prefix for a few cents nor ping-pong with the topic. (An idle
boundary reopens the choice to the base selector outright; ``engine`` does that.)
"""

from __future__ import annotations

from dataclasses import dataclass

from saar.policy.config import PhysicalModel, PolicyConfig, SessionAwareKnobs
from saar.policy.priors import PriorLookup
from saar.policy.selector import Candidate
from saar.policy.session import SessionState
from saar.policy.trace import SwitchTerms

__all__ = ["Economics", "Warmth", "evaluate", "recent_switches", "warmth_of"]

_PER_TOKEN = 1e-6


@dataclass(frozen=True, slots=True)
class Warmth:
    """The session's prefix-cache state on its current model."""

    now: float
    """Fraction of the previous prefix expected to be cached right now."""
    ratio: float
    """The session's reuse ratio (learned on warm turns, else the prior)."""
    warm_tokens: float
    """``W``: tokens of this prompt expected to hit the cache now."""
    evidence: bool
    """True when ``ratio`` was learned from this session rather than the prior."""


@dataclass(frozen=True, slots=True)
class Economics:
    """Every candidate's terms and the best one."""

    terms: tuple[SwitchTerms, ...]
    best: Candidate | None
    """The candidate with the highest net value (``None`` if there is no other candidate)."""
    best_net: float


def warmth_of(
    *,
    state: SessionState,
    current: str,
    context_tokens: int,
    knobs: SessionAwareKnobs,
    default_ratio: float,
    now: float,
) -> Warmth:
    """Estimate the prefix-cache warmth of ``current`` for this session at ``now``.

    The last response's prompt is resident on the model that served it, decaying with
    ``cache_half_life_seconds``; the session's learned reuse ratio (``hit_ratio``, the prior
    before any warm turn) says how much of it the next request really hits. Evidence is per
    session and per physical model, never a model-level proxy (upstream weakness #15); a cold
    first turn on a model says nothing about reuse, so it does not lower the ratio.
    """
    ratio = state.hit_ratio if state.hit_ratio is not None else default_ratio
    ratio = min(1.0, max(0.0, ratio))
    if state.evidence_model == current and state.evidence_prompt > 0:
        resident, seen = state.evidence_prompt, state.evidence_at
    elif state.evidence_model is None:
        # No usage reported yet (or never): assume the last routed prompt is resident.
        resident, seen = state.context_tokens, state.last_seen
    else:
        # The last response came from another model: nothing of this session is resident here.
        resident, seen = 0, state.last_seen
    half_life = knobs.cache_half_life_seconds
    age = max(0.0, now - seen)
    decay = 0.5 ** (age / half_life) if half_life > 0.0 else 1.0
    fraction = ratio * decay if resident > 0 else 0.0
    warm = min(context_tokens, resident) * fraction
    return Warmth(fraction, ratio, warm, state.hit_ratio is not None)


def recent_switches(state: SessionState, knobs: SessionAwareKnobs, now: float) -> float:
    """Count recent committed switches, each decayed with the idle timeout as its half-life."""
    if not state.switch_times:
        return 0.0
    scale = knobs.idle_timeout_seconds
    if scale <= 0.0:
        return float(len(state.switch_times))
    total = 0.0
    for t in state.switch_times:
        total += 0.5 ** (max(0.0, now - t) / scale)
    return total


def _future_turns(p: float, expected: float) -> tuple[float, float]:
    """(Hf, probability of wanting to return within ``expected`` turns)."""
    if expected <= 0.0:
        return 0.0, 0.0
    keep = 1.0 - p
    if p <= 0.0:
        return expected, 0.0
    survive: float = keep**expected
    return keep * (1.0 - survive) / p, 1.0 - survive


def evaluate(
    *,
    current: Candidate,
    candidates: tuple[Candidate, ...],
    decision: str,
    config: PolicyConfig,
    knobs: SessionAwareKnobs,
    quality_weight: float,
    kappa: float,
    context_tokens: int,
    completion_tokens: float,
    warmth: Warmth,
    recent: float,
    remaining: PriorLookup,
    reset: bool,
) -> Economics:
    """Price a switch from ``current`` to every other candidate (see the module docstring)."""
    priors = config.priors
    a: PhysicalModel = current.physical
    a_key = current.key
    pa = a.pricing.prompt_per_1m * _PER_TOKEN
    ca = a.pricing.cached_prompt_per_1m * _PER_TOKEN
    oa = a.pricing.completion_per_1m * _PER_TOKEN
    tokens = float(context_tokens)
    warm = warmth.warm_tokens
    ratio = warmth.ratio
    stay_a_now = warm * ca + (tokens - warm) * pa + completion_tokens * oa
    steady_a = tokens * (ratio * ca + (1.0 - ratio) * pa) + completion_tokens * oa
    p = min(1.0, max(0.0, knobs.remaining_turn_weight))
    future, back_probability = _future_turns(p, remaining.value)
    horizon = 1.0 + future
    qgm = knobs.quality_gap_multiplier
    hpw = knobs.handoff_penalty_weight
    pcw = knobs.prefix_cache_weight
    stay = 0.0 if reset else -knobs.stay_bias * quality_weight
    # Empty tables (no replay priors yet) skip the lookups: they are on the hot path.
    gap_table = bool(priors.quality_gap)
    handoff_table = bool(priors.handoff_penalty)
    terms: list[SwitchTerms] = []
    best: Candidate | None = None
    best_net = float("-inf")
    for cand in candidates:
        b = cand.physical
        b_key = cand.key
        if b_key == a_key:
            continue
        pb = b.pricing.prompt_per_1m * _PER_TOKEN
        cb = b.pricing.cached_prompt_per_1m * _PER_TOKEN
        ob = b.pricing.completion_per_1m * _PER_TOKEN
        gap = cand.quality - current.quality
        if gap_table:
            gap = priors.lookup_quality_gap(decision, a_key, b_key, gap).value
        quality = horizon * qgm * quality_weight * gap
        b_now = warm * cb + (tokens - warm) * pb + completion_tokens * ob
        turn_cost = -kappa * (b_now - stay_a_now)
        checkout = -pcw * kappa * warm * (pb - cb)
        steady_b = tokens * (ratio * cb + (1.0 - ratio) * pb) + completion_tokens * ob
        future_cost = -kappa * future * (steady_b - steady_a)
        # Coming back re-prefills A: real money, priced even at a reset boundary.
        continuity = -back_probability * pcw * kappa * tokens * ratio * (pa - ca)
        if reset:
            handoff = history = 0.0
        else:
            if handoff_table:
                there = priors.lookup_handoff(a_key, b_key).value
                back = priors.lookup_handoff(b_key, a_key).value
            else:
                there = back = priors.default_handoff_penalty
            handoff = -hpw * quality_weight * there
            history = -knobs.switch_history_weight * quality_weight * there * recent
            continuity -= back_probability * hpw * quality_weight * back
        net = quality + turn_cost + checkout + future_cost + handoff + history + continuity + stay
        terms.append(
            SwitchTerms(
                physical=b_key,
                quality_gain=quality,
                horizon=horizon,
                turn_cost_delta=turn_cost,
                future_cost_delta=future_cost,
                checkout=checkout,
                handoff=handoff,
                history=history,
                continuity=continuity,
                stay_bias=stay,
                net=net,
            )
        )
        # Strict '>' keeps ties on the earlier candidate (config order).
        if net > best_net:
            best_net = net
            best = cand
    return Economics(tuple(terms), best, best_net)
