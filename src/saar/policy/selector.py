"""The base selector: match a decision on request signals, then pick among its model refs.

Theory of operation: decisions arrive sorted by priority (``PolicyConfig.decisions``); the
first whose signals match (``any``/``all``) wins, otherwise ``default_decision``. Its candidates
are its ``model_refs`` (restricted to one configured model when the client named one instead of
a logical model). The method then picks one:

* ``static``: the first candidate;
* ``hybrid``: argmax of ``quality_weight * quality - cost_weight * cost / max_cost`` where
  ``cost`` is this request's expected cost on the candidate (``context_tokens`` at the prompt
  price plus ``expected_completion_tokens`` at the completion price) and ``max_cost`` is the
  largest such cost **among this decision's candidates** (never the whole catalogue: adding an
  expensive model elsewhere must not change this decision; upstream weakness #17).

Every candidate's score is returned for the trace, whatever the method. Regular expressions are
compiled once per pattern string (module cache): the config is immutable and small, and a
compile per call would dominate ``decide``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saar.policy.config import (
    DecisionSpec,
    HybridWeights,
    MatchMode,
    PhysicalModel,
    PolicyConfig,
    SelectionMethod,
    Signal,
    SignalKind,
)
from saar.policy.facts import RequestFacts

__all__ = [
    "BaseChoice",
    "Candidate",
    "CandidateScore",
    "base_select",
    "candidates_for",
    "compiled",
    "match_decision",
    "signal_match",
    "turn_cost",
]

_PER_TOKEN = 1e-6
_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def compiled(pattern: str) -> re.Pattern[str]:
    """Return the compiled ``pattern``, compiling it once per process."""
    found = _REGEX_CACHE.get(pattern)
    if found is None:
        found = re.compile(pattern)
        _REGEX_CACHE[pattern] = found
    return found


@dataclass(frozen=True, slots=True)
class Candidate:
    """A physical model eligible for this request, with its decision-local quality."""

    physical: PhysicalModel
    quality: float
    key: str = ""
    """``physical.key``, computed once (the property builds a string per call)."""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.physical.key)


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """The base selector's view of one candidate (for the trace)."""

    physical: str
    quality: float
    expected_cost: float
    """Currency units for this request, cold cache (the single-turn view)."""
    score: float
    """``quality_weight * quality - cost_weight * expected_cost / max_cost``."""


@dataclass(frozen=True, slots=True)
class BaseChoice:
    """The base selector's result."""

    method: SelectionMethod
    choice: Candidate
    scores: tuple[CandidateScore, ...]
    max_cost: float
    """The normaliser: the largest cold expected cost among the candidates."""


def turn_cost(physical: PhysicalModel, prompt_tokens: float, completion_tokens: float) -> float:
    """Cold-cache cost of one request: every prompt token at the full prompt price."""
    pricing = physical.pricing
    return (
        prompt_tokens * pricing.prompt_per_1m + completion_tokens * pricing.completion_per_1m
    ) * _PER_TOKEN


def _signal_matches(signal: Signal, facts: RequestFacts, text: str) -> bool:
    kind = signal.kind
    if kind is SignalKind.KEYWORDS:
        return any(keyword in text for keyword in signal.keywords)
    if kind is SignalKind.REGEX:
        return compiled(signal.pattern).search(facts.last_user_text) is not None
    if kind is SignalKind.MIN_CONTEXT_TOKENS:
        return facts.context_tokens >= signal.threshold
    if kind is SignalKind.MAX_CONTEXT_TOKENS:
        return facts.context_tokens <= signal.threshold
    if kind is SignalKind.HAS_TOOLS:
        return facts.has_tools is signal.flag
    # HEADER: present (value None) or exact value.
    value = facts.headers.get(signal.header)
    if value is None:
        return False
    return signal.value is None or value == signal.value


def _decision_matches(spec: DecisionSpec, facts: RequestFacts, text: str) -> bool:
    if not spec.signals:
        return False
    if spec.match is MatchMode.ALL:
        return all(_signal_matches(signal, facts, text) for signal in spec.signals)
    return any(_signal_matches(signal, facts, text) for signal in spec.signals)


def match_decision(facts: RequestFacts, config: PolicyConfig) -> DecisionSpec:
    """Return the first matching decision in priority order, else ``default_decision``."""
    return signal_match(facts, config) or config.decision(config.default_decision)


def signal_match(facts: RequestFacts, config: PolicyConfig) -> DecisionSpec | None:
    """Return the first decision whose signals match, or ``None`` when none does.

    ``None`` is information: the request says nothing about its topic ("continue", "fix
    it", a tool result), so a session keeps the decision it was in rather than falling to
    the default decision and counting that as drift.
    """
    text = facts.last_user_text.lower()
    for spec in config.decisions:
        if _decision_matches(spec, facts, text):
            return spec
    return None


def candidates_for(
    spec: DecisionSpec, facts: RequestFacts, config: PolicyConfig
) -> tuple[Candidate, ...]:
    """Return the decision's usable candidates, restricted to the model the client named.

    A client may choose a model the operator configured (``model: qwen3-32b``) but never a
    pool: the candidates become that model's physical models, preferring the decision's refs.
    """
    models = config.physical_models
    refs = tuple(
        Candidate(
            models[ref.physical],
            models[ref.physical].quality if ref.quality is None else ref.quality,
        )
        for ref in spec.model_refs
        if ref.physical in models
    )
    asked = facts.logical_model
    if asked in config.logical_models:
        return refs
    restricted = tuple(c for c in refs if c.physical.model == asked)
    if restricted:
        return restricted
    named = tuple(Candidate(p, p.quality) for p in models.values() if p.model == asked)
    return named if named else refs


def _scores(
    cands: tuple[Candidate, ...], facts: RequestFacts, weights: HybridWeights
) -> tuple[tuple[CandidateScore, ...], float]:
    completion = float(weights.expected_completion_tokens)
    costs = [turn_cost(c.physical, facts.context_tokens, completion) for c in cands]
    max_cost = max(costs, default=0.0)
    inv = 1.0 / max_cost if max_cost > 0.0 else 0.0
    scores = tuple(
        CandidateScore(
            c.key,
            c.quality,
            cost,
            weights.quality_weight * c.quality - weights.cost_weight * cost * inv,
        )
        for c, cost in zip(cands, costs, strict=True)
    )
    return scores, max_cost


def base_select(
    spec: DecisionSpec,
    cands: tuple[Candidate, ...],
    facts: RequestFacts,
    method: SelectionMethod,
) -> BaseChoice:
    """Pick among ``cands`` with ``method`` (``session_aware`` means its ``fallback_method``).

    Raises ``ValueError`` when there is no candidate (settings validation prevents it).
    """
    if not cands:
        msg = f"decision {spec.name!r} has no usable candidate"
        raise ValueError(msg)
    if method is SelectionMethod.SESSION_AWARE:
        method = spec.session_aware.fallback_method
        if method is SelectionMethod.SESSION_AWARE:
            method = SelectionMethod.STATIC
    scores, max_cost = _scores(cands, facts, spec.hybrid)
    index = 0
    if method is SelectionMethod.HYBRID:
        best = scores[0].score
        for i in range(1, len(scores)):
            # Strict '>' keeps ties on the earlier candidate: config order is the tie-break.
            if scores[i].score > best:
                best = scores[i].score
                index = i
    return BaseChoice(method, cands[index], scores, max_cost)
