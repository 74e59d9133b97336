"""Policy test builders: a three-tier catalogue with two pools for the medium model.

Imported by the tests directly (``from policy_builders import ...``) and re-exported as
fixtures by ``conftest.py``.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from saar.policy import (
    AdaptationMode,
    Api,
    DecisionSpec,
    HybridWeights,
    LearningConfig,
    MatchMode,
    ModelRef,
    PhysicalModel,
    PolicyConfig,
    Pool,
    Pricing,
    RequestFacts,
    SelectionMethod,
    SessionAwareKnobs,
    SessionState,
    Signal,
    SignalKind,
)

SMALL = "small-8b@mi300"
MEDIUM_MI300 = "medium-32b@mi300"
MEDIUM_H100 = "medium-32b@h100"
FRONTIER = "frontier-400b@h100"

POOLS = {
    "mi300": Pool("mi300", "pool-mi300", "amd-mi300x"),
    "h100": Pool("h100", "pool-h100", "nvidia-h100"),
}

# Prices per 1M tokens; the same medium weights cost less on the MI300 pool than on H100.
MODELS = {
    SMALL: PhysicalModel("small-8b", "mi300", "pool-mi300", Pricing(0.10, 0.01, 0.40), 0.55),
    MEDIUM_MI300: PhysicalModel(
        "medium-32b", "mi300", "pool-mi300", Pricing(0.50, 0.05, 2.00), 0.72
    ),
    MEDIUM_H100: PhysicalModel("medium-32b", "h100", "pool-h100", Pricing(0.80, 0.08, 3.20), 0.72),
    FRONTIER: PhysicalModel("frontier-400b", "h100", "pool-h100", Pricing(3.00, 0.30, 15.00), 0.90),
}


EASY_REFS = (
    ModelRef(SMALL, quality=0.88),
    ModelRef(MEDIUM_MI300, quality=0.89),
    ModelRef(FRONTIER, quality=0.9),
)
"""General traffic on which the small model is nearly as good: switch economics sit near zero."""
UP_REFS = (ModelRef(FRONTIER), ModelRef(MEDIUM_MI300), ModelRef(SMALL))
"""General traffic whose base (static, first ref) is the frontier model."""


def make_config(
    *,
    knobs: SessionAwareKnobs | None = None,
    general_method: SelectionMethod = SelectionMethod.SESSION_AWARE,
    general_refs: tuple[ModelRef, ...] = (
        ModelRef(SMALL),
        ModelRef(MEDIUM_MI300),
        ModelRef(FRONTIER),
    ),
    coding_refs: tuple[ModelRef, ...] = (ModelRef(FRONTIER), ModelRef(MEDIUM_MI300)),
    mode: AdaptationMode = AdaptationMode.APPLY,
    learning: LearningConfig | None = None,
    hybrid: HybridWeights | None = None,
    extra: tuple[DecisionSpec, ...] = (),
    **config_fields: Any,
) -> PolicyConfig:
    """Build a PolicyConfig: ``coding`` (keywords) over ``general`` (the default)."""
    sa = knobs if knobs is not None else SessionAwareKnobs()
    weights = hybrid if hybrid is not None else HybridWeights()
    coding = DecisionSpec(
        name="coding",
        priority=100,
        signals=(Signal(SignalKind.KEYWORDS, keywords=("refactor", "debug", "traceback")),),
        match=MatchMode.ANY,
        model_refs=coding_refs,
        method=SelectionMethod.SESSION_AWARE,
        session_aware=sa,
        mode=mode,
        hybrid=weights,
    )
    general = DecisionSpec(
        name="general",
        priority=0,
        signals=(),
        match=MatchMode.ANY,
        model_refs=general_refs,
        method=general_method,
        session_aware=sa,
        mode=mode,
        hybrid=weights,
    )
    decisions = tuple(sorted((*extra, coding, general), key=lambda d: -d.priority))
    return PolicyConfig(
        logical_models=frozenset({"auto"}),
        pools=MappingProxyType(POOLS),
        physical_models=MappingProxyType(MODELS),
        decisions=decisions,
        default_decision="general",
        learning=learning if learning is not None else LearningConfig(),
        **config_fields,
    )


def facts(text: str = "hello", **fields: Any) -> RequestFacts:
    """RequestFacts of a chat turn in session s1 / conversation c1 with 20k context tokens."""
    base: dict[str, Any] = {
        "request_id": "req-1",
        "api": Api.CHAT,
        "logical_model": "auto",
        "session_id": "s1",
        "conversation_id": "c1",
        "last_user_text": text,
        "context_tokens": 20_000,
    }
    base.update(fields)
    return RequestFacts(**base)


def on_model(
    physical: str,
    *,
    now: float = 1000.0,
    turns: int = 3,
    decision: str = "general",
    cached_ratio: float | None = 0.9,
    **fields: Any,
) -> SessionState:
    """Router memory of a session committed to ``physical``, last seen at ``now - 10``."""
    state = SessionState(
        affinity_key="ak-test",
        committed=physical,
        decision=decision,
        phase="user_turn",
        turn_count=turns,
        last_seen=now - 10.0,
        context_tokens=19_000,
    )
    if cached_ratio is not None:
        state = replace(
            state,
            evidence_model=physical,
            evidence_prompt=19_000,
            evidence_cached=int(19_000 * cached_ratio),
            evidence_at=now - 10.0,
            hit_ratio=cached_ratio,
        )
    return replace(state, **fields)
