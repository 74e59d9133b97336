"""saar.policy: the pure session-aware routing policy (stdlib only, clock passed in).

``decide(state, facts, config, now)`` routes one request and returns the new router memory;
``apply_response`` learns from its response. See docs/design/0002-session-aware-policy.md and
the action/reason table in ``saar.policy.reasons``.
"""

from saar.policy.config import (
    AdaptationMode,
    DecisionSpec,
    HybridWeights,
    LearningConfig,
    MatchMode,
    ModelRef,
    PhysicalModel,
    PolicyConfig,
    Pool,
    Pricing,
    Scope,
    SelectionMethod,
    SessionAwareKnobs,
    Signal,
    SignalKind,
)
from saar.policy.decision import Decision
from saar.policy.engine import (
    affinity_for,
    apply_response,
    decide,
    index_entries,
    protected_key,
    response_index_key,
)
from saar.policy.facts import (
    Api,
    BackendPin,
    IdentitySource,
    Pin,
    ProviderState,
    RequestFacts,
    ResponseFacts,
)
from saar.policy.headers import parse_methods, parse_pairs, response_headers
from saar.policy.priors import PriorEntry, PriorLookup, Priors, PriorSource
from saar.policy.reasons import ACTIONS, PHASES, REASONS, Action, Phase, Reason
from saar.policy.session import SessionCodecError, SessionState
from saar.policy.trace import DecisionTrace, SwitchTerms

__all__ = [
    "ACTIONS",
    "PHASES",
    "REASONS",
    "Action",
    "AdaptationMode",
    "Api",
    "BackendPin",
    "Decision",
    "DecisionSpec",
    "DecisionTrace",
    "HybridWeights",
    "IdentitySource",
    "LearningConfig",
    "MatchMode",
    "ModelRef",
    "Phase",
    "PhysicalModel",
    "Pin",
    "PolicyConfig",
    "Pool",
    "Pricing",
    "PriorEntry",
    "PriorLookup",
    "PriorSource",
    "Priors",
    "ProviderState",
    "Reason",
    "RequestFacts",
    "ResponseFacts",
    "Scope",
    "SelectionMethod",
    "SessionAwareKnobs",
    "SessionCodecError",
    "SessionState",
    "Signal",
    "SignalKind",
    "SwitchTerms",
    "affinity_for",
    "apply_response",
    "decide",
    "index_entries",
    "parse_methods",
    "parse_pairs",
    "protected_key",
    "response_headers",
    "response_index_key",
]
