"""Base selector: decision matching on signals, static and hybrid picks, client model choice."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest
from policy_builders import FRONTIER, MEDIUM_H100, MEDIUM_MI300, MODELS, SMALL, facts, make_config

from saar.policy import (
    DecisionSpec,
    HybridWeights,
    MatchMode,
    ModelRef,
    PhysicalModel,
    Pricing,
    SelectionMethod,
    SessionAwareKnobs,
    Signal,
    SignalKind,
)
from saar.policy.selector import base_select, candidates_for, compiled, match_decision


def _spec(name: str, signals: tuple[Signal, ...], match: MatchMode = MatchMode.ANY) -> DecisionSpec:
    return DecisionSpec(
        name=name,
        priority=50,
        signals=signals,
        match=match,
        model_refs=(ModelRef(SMALL),),
        method=SelectionMethod.STATIC,
        session_aware=SessionAwareKnobs(),
    )


@pytest.mark.parametrize(
    ("signal", "request_fields", "expected"),
    [
        (Signal(SignalKind.KEYWORDS, keywords=("sql",)), {"last_user_text": "Fix my SQL"}, "probe"),
        (Signal(SignalKind.KEYWORDS, keywords=("sql",)), {"last_user_text": "hi"}, "general"),
        (
            Signal(SignalKind.REGEX, pattern=r"\bv\d+\.\d+"),
            {"last_user_text": "bump v1.2"},
            "probe",
        ),
        (Signal(SignalKind.REGEX, pattern=r"\bv\d+\.\d+"), {"last_user_text": "bump"}, "general"),
        (
            Signal(SignalKind.MIN_CONTEXT_TOKENS, threshold=50_000),
            {"context_tokens": 60_000},
            "probe",
        ),
        (
            Signal(SignalKind.MIN_CONTEXT_TOKENS, threshold=50_000),
            {"context_tokens": 10},
            "general",
        ),
        (Signal(SignalKind.MAX_CONTEXT_TOKENS, threshold=100), {"context_tokens": 50}, "probe"),
        (Signal(SignalKind.MAX_CONTEXT_TOKENS, threshold=100), {"context_tokens": 500}, "general"),
        (Signal(SignalKind.HAS_TOOLS), {"has_tools": True}, "probe"),
        (Signal(SignalKind.HAS_TOOLS, flag=False), {"has_tools": True}, "general"),
        (
            Signal(SignalKind.HEADER, header="x-tier", value="gold"),
            {"headers": {"x-tier": "gold"}},
            "probe",
        ),
        (
            Signal(SignalKind.HEADER, header="x-tier", value="gold"),
            {"headers": {"x-tier": "tin"}},
            "general",
        ),
        (Signal(SignalKind.HEADER, header="x-tier"), {"headers": {"x-tier": "tin"}}, "probe"),
        (Signal(SignalKind.HEADER, header="x-tier"), {}, "general"),
    ],
)
def test_signal_kinds_match(
    signal: Signal, request_fields: dict[str, object], expected: str
) -> None:
    """Each signal kind matches exactly when its condition holds; otherwise the default wins."""
    config = make_config(extra=(_spec("probe", (signal,)),))
    fields = dict(request_fields)
    if "headers" in fields:
        fields["headers"] = MappingProxyType(dict(fields["headers"]))  # type: ignore[call-overload]
    text = str(fields.pop("last_user_text", "hello"))
    assert expected == match_decision(facts(text, **fields), config).name


def test_match_all_needs_every_signal() -> None:
    """``match: all`` needs every signal; ``any`` needs one."""
    signals = (Signal(SignalKind.KEYWORDS, keywords=("sql",)), Signal(SignalKind.HAS_TOOLS))
    both = make_config(extra=(_spec("probe", signals, MatchMode.ALL),))
    assert "general" == match_decision(facts("sql please"), both).name
    assert "probe" == match_decision(facts("sql please", has_tools=True), both).name


def test_priority_order_wins() -> None:
    """The highest-priority matching decision wins over a lower one that also matches."""
    config = make_config(
        extra=(_spec("probe", (Signal(SignalKind.KEYWORDS, keywords=("debug",)),)),)
    )
    assert "coding" == match_decision(facts("debug this"), config).name


def test_regex_is_compiled_once() -> None:
    """The same pattern string returns the same compiled object (no compile per call)."""
    assert compiled(r"a+b") is compiled(r"a+b")


def test_static_picks_first_ref() -> None:
    """``static`` returns the first candidate in config order."""
    config = make_config(general_method=SelectionMethod.STATIC)
    spec = config.decision("general")
    choice = base_select(spec, candidates_for(spec, facts(), config), facts(), spec.method)
    assert SMALL == choice.choice.physical.key


def test_hybrid_picks_best_quality_minus_cost() -> None:
    """``hybrid`` trades quality against normalised cost; a low cost weight favours quality."""
    quality_first = make_config(
        general_method=SelectionMethod.HYBRID,
        hybrid=HybridWeights(quality_weight=1.0, cost_weight=0.05),
    )
    spec = quality_first.decision("general")
    cands = candidates_for(spec, facts(), quality_first)
    assert FRONTIER == base_select(spec, cands, facts(), spec.method).choice.physical.key
    cost_first = make_config(
        general_method=SelectionMethod.HYBRID,
        hybrid=HybridWeights(quality_weight=1.0, cost_weight=2.0),
    )
    spec = cost_first.decision("general")
    assert SMALL == base_select(spec, cands, facts(), spec.method).choice.physical.key


def test_hybrid_normalises_over_the_decisions_candidates_only() -> None:
    """Adding a very expensive model elsewhere in the catalogue does not change a hybrid pick."""
    config = make_config(general_method=SelectionMethod.HYBRID)
    spec = config.decision("general")
    before = base_select(spec, candidates_for(spec, facts(), config), facts(), spec.method)
    huge = PhysicalModel("huge", "h100", "pool-h100", Pricing(500.0, 50.0, 2000.0), 0.99)
    bigger = replace(config, physical_models=MappingProxyType({**MODELS, "huge@h100": huge}))
    after = base_select(spec, candidates_for(spec, facts(), bigger), facts(), spec.method)
    assert before.scores == after.scores
    assert before.choice == after.choice


def test_session_aware_base_uses_fallback_method() -> None:
    """A session_aware decision's base is its ``fallback_method``."""
    hybrid = make_config(knobs=SessionAwareKnobs(fallback_method=SelectionMethod.HYBRID))
    spec = hybrid.decision("general")
    choice = base_select(spec, candidates_for(spec, facts(), hybrid), facts(), spec.method)
    assert (SelectionMethod.HYBRID, MEDIUM_MI300) == (choice.method, choice.choice.physical.key)


def test_client_named_model_restricts_to_its_physical_models() -> None:
    """A client naming a configured model gets only that model's physical models, never a pool."""
    config = make_config(general_refs=(ModelRef(SMALL), ModelRef(MEDIUM_H100)))
    spec = config.decision("general")
    named = candidates_for(spec, facts(logical_model="medium-32b"), config)
    assert [MEDIUM_H100] == [c.physical.key for c in named]
    outside = candidates_for(spec, facts(logical_model="frontier-400b"), config)
    assert [FRONTIER] == [c.physical.key for c in outside]


def test_ref_quality_overrides_model_quality() -> None:
    """A decision-local ref quality replaces the model card quality for that decision."""
    config = make_config(general_refs=(ModelRef(SMALL, quality=0.8),))
    spec = config.decision("general")
    assert [0.8] == [c.quality for c in candidates_for(spec, facts(), config)]
