"""Frozen policy configuration: the validated, typed form of the YAML the router runs on.

Theory of operation: ``saar.settings`` reads YAML, validates every value (naming the exact
path of a bad one) and builds these frozen dataclasses once per (re)load. The policy only
ever sees this module's types, so it stays pure and the same config object serves Envoy
traffic, the benchmark matrix and offline replay re-evaluation. A reload swaps the whole
``PolicyConfig`` reference; nothing here is mutated after construction.

A *physical model* is a (model, pool) pair: the same weights on an AMD MI300 pool and on an
NVIDIA H100 pool are two physical models, with their own prices, their own Envoy cluster
and their own prefix caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from saar.policy.priors import Priors

__all__ = [
    "AdaptationMode",
    "DecisionSpec",
    "HybridWeights",
    "LearningConfig",
    "MatchMode",
    "ModelRef",
    "PhysicalModel",
    "PolicyConfig",
    "Pool",
    "Pricing",
    "Scope",
    "SelectionMethod",
    "SessionAwareKnobs",
    "Signal",
    "SignalKind",
]


class SelectionMethod(StrEnum):
    """How a decision picks among its ``modelRefs`` for one request (the base selector)."""

    STATIC = "static"
    """The first usable model ref, in config order."""
    HYBRID = "hybrid"
    """The ref with the best quality-minus-expected-cost score for this request."""
    SESSION_AWARE = "session_aware"
    """The base choice (``fallback_method``) filtered through router memory and switch economics."""


class AdaptationMode(StrEnum):
    """Per-decision mode of the session-aware adaptation (``adaptations.session_aware.mode``)."""

    APPLY = "apply"
    """Decide and route as decided."""
    OBSERVE = "observe"
    """Decide and record what would have happened, but route as the base selector said."""
    BYPASS = "bypass"
    """Do not run the adaptation at all; route as the base selector said."""


class Scope(StrEnum):
    """What the router memory protects.

    YAML: ``global.router.learning.adaptations.session_aware.scope``.
    """

    CONVERSATION = "conversation"
    """One agent run, keyed on the conversation id; a new conversation may route afresh."""
    SESSION = "session"
    """The whole client session across conversations, keyed on the session id."""


class SignalKind(StrEnum):
    """The request signals a decision rule can match on."""

    KEYWORDS = "keywords"
    REGEX = "regex"
    MIN_CONTEXT_TOKENS = "min_context_tokens"
    MAX_CONTEXT_TOKENS = "max_context_tokens"
    HAS_TOOLS = "has_tools"
    HEADER = "header"


class MatchMode(StrEnum):
    """How a decision combines its signals."""

    ANY = "any"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices in currency units per one million tokens."""

    prompt_per_1m: float
    cached_prompt_per_1m: float
    completion_per_1m: float


@dataclass(frozen=True, slots=True)
class Pool:
    """A vLLM pool: one Envoy cluster of replicas on one kind of accelerator."""

    name: str
    cluster: str
    """The Envoy cluster name saar writes into the cluster header."""
    accelerator: str = ""
    """Informational, e.g. ``amd-mi300x`` or ``nvidia-h100``."""


@dataclass(frozen=True, slots=True)
class PhysicalModel:
    """One model served by one pool, with that pool's prices and the model's quality."""

    model: str
    """The name the backend serves (written into the body's ``model``)."""
    pool: str
    cluster: str
    pricing: Pricing
    quality: float
    """Model quality in [0, 1] (the model card's ``quality_score``)."""

    @property
    def key(self) -> str:
        """Stable identifier ``model@pool`` used in state, traces and headers."""
        return f"{self.model}@{self.pool}"


@dataclass(frozen=True, slots=True)
class Signal:
    """One matchable condition of a decision."""

    kind: SignalKind
    keywords: tuple[str, ...] = ()
    """Lower-cased keywords; match when any occurs in the last user message."""
    pattern: str = ""
    """A regular expression searched in the last user message."""
    threshold: int = 0
    """Token threshold for the context-size signals."""
    header: str = ""
    """Lower-cased header name for ``header`` signals."""
    value: str | None = None
    """Exact header value; ``None`` matches any present value."""
    flag: bool = True
    """Expected truth value for ``has_tools``."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A candidate of a decision: a physical model, optionally with a decision-local quality."""

    physical: str
    """``model@pool`` key of a configured physical model."""
    quality: float | None = None
    """Overrides the model's quality for this decision (e.g. a coder model on coding)."""


@dataclass(frozen=True, slots=True)
class HybridWeights:
    """Weights of the ``hybrid`` base selector's score: quality minus normalised expected cost."""

    quality_weight: float = 1.0
    cost_weight: float = 0.3
    expected_completion_tokens: int = 256
    """Completion tokens assumed per request when pricing a candidate (hybrid and economics)."""


@dataclass(frozen=True, slots=True)
class SessionAwareKnobs:
    """Knobs of the session-aware selector; names and defaults follow the published config."""

    fallback_method: SelectionMethod = SelectionMethod.STATIC
    min_turns_before_switch: int = 1
    stay_bias: float = 0.25
    quality_gap_multiplier: float = 1.0
    handoff_penalty_weight: float = 1.0
    remaining_turn_weight: float = 0.15
    idle_timeout_seconds: float = 300.0
    tool_loop_hard_lock: bool = True
    context_portability_hard_lock: bool = True
    decision_drift_reset: bool = True
    prefix_cache_weight: float = 1.0
    switch_history_weight: float = 1.0
    cache_half_life_seconds: float = 300.0
    """Half-life of a session's prefix-cache warmth after its last observation (KV eviction)."""
    unhealthy_after_failures: int = 2
    """Consecutive 5xx/429 answers after which an unlocked session moves off a backend."""
    follow_up_max_words: int = 4
    """An unsignalled user message of at most this many words ("continue", "fix it") keeps the
    session's decision; 0 = only tool results do (follow-ups fall to the default decision, which
    is cheaper when a signal escalated the session and lower quality if the task is still hard)."""


@dataclass(frozen=True, slots=True)
class DecisionSpec:
    """A routing decision: when it matches, and how it picks among its model refs."""

    name: str
    priority: int
    signals: tuple[Signal, ...]
    match: MatchMode
    model_refs: tuple[ModelRef, ...]
    method: SelectionMethod
    session_aware: SessionAwareKnobs
    mode: AdaptationMode = AdaptationMode.APPLY
    hybrid: HybridWeights = field(default_factory=HybridWeights)


@dataclass(frozen=True, slots=True)
class LearningConfig:
    """``global.router.learning``: the Router Learning wrapper around the base selector."""

    enabled: bool = True
    session_aware_enabled: bool = True
    scope: Scope = Scope.CONVERSATION
    session_header: str = "x-session-id"
    conversation_header: str = "x-conversation-id"


def _empty_models() -> Mapping[str, PhysicalModel]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Everything the pure policy needs, validated and frozen."""

    logical_models: frozenset[str]
    """Body ``model`` values that saar routes (e.g. ``auto``); any other name passes through."""
    pools: Mapping[str, Pool]
    physical_models: Mapping[str, PhysicalModel]
    """Keyed by ``model@pool``, in config order."""
    decisions: tuple[DecisionSpec, ...]
    """Sorted by descending priority, then config order."""
    default_decision: str
    """The decision used when no other matches."""
    learning: LearningConfig = field(default_factory=LearningConfig)
    header_signals: frozenset[str] = frozenset()
    """Lower-cased header names that some decision matches on (the only headers kept as facts)."""
    priors: Priors = field(default_factory=Priors)
    """Quality-gap, handoff and remaining-turn priors with their defaults (``policy.priors``)."""

    def decision(self, name: str) -> DecisionSpec:
        """Return the decision called ``name``; raises ``KeyError`` when unknown."""
        for spec in self.decisions:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def physical(self, key: str) -> PhysicalModel:
        """Return the physical model ``model@pool``; raises ``KeyError`` when unknown."""
        return self.physical_models[key]
