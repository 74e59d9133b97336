"""Switch economics: every knob moves the decision in its documented direction."""

from __future__ import annotations

from typing import Any

import pytest
from policy_builders import (
    EASY_REFS,
    FRONTIER,
    MEDIUM_MI300,
    SMALL,
    UP_REFS,
    facts,
    make_config,
    on_model,
)

from saar.policy import (
    Action,
    ModelRef,
    PolicyConfig,
    PriorEntry,
    Priors,
    PriorSource,
    SessionAwareKnobs,
    SessionState,
    decide,
)
from saar.policy.switching import warmth_of


def _net(config: PolicyConfig, state: SessionState, target: str) -> tuple[Action, float]:
    decision, _ = decide(state, facts(), config, 1000.0)
    nets = {t.physical: t.net for t in decision.trace.candidates}
    return decision.action, nets[target]


def _down(**knobs: Any) -> tuple[Action, float]:
    """Frontier session on easy traffic whose base is the small model."""
    return _net(
        make_config(general_refs=EASY_REFS, knobs=SessionAwareKnobs(**knobs)),
        on_model(FRONTIER),
        SMALL,
    )


def _up(**knobs: Any) -> tuple[Action, float]:
    """Medium session on traffic whose base is the frontier model."""
    return _net(
        make_config(general_refs=UP_REFS, knobs=SessionAwareKnobs(**knobs)),
        on_model(MEDIUM_MI300),
        FRONTIER,
    )


def test_stay_bias_holds_the_current_model() -> None:
    """Raising stay_bias turns a worthwhile switch into a stay."""
    assert Action.SWITCH == _down(stay_bias=0.0)[0]
    assert Action.STAY == _down()[0]


def test_quality_gap_multiplier_amplifies_the_gap() -> None:
    """A larger quality_gap_multiplier makes a quality upgrade more attractive."""
    assert Action.STAY == _up(quality_gap_multiplier=0.0)[0]
    assert Action.SWITCH == _up()[0]
    assert _up(quality_gap_multiplier=3.0)[1] > _up()[1]


def test_handoff_penalty_weight_discourages_switching() -> None:
    """A larger handoff_penalty_weight lowers the net switch value until the session stays."""
    assert Action.SWITCH == _up()[0]
    assert Action.STAY == _up(handoff_penalty_weight=10.0)[0]


def test_remaining_turn_weight_values_continuity() -> None:
    """More remaining_turn_weight values continuity more: a worthwhile switch becomes a stay."""
    assert Action.SWITCH == _down(remaining_turn_weight=0.0)[0]
    assert Action.STAY == _down()[0]
    assert _down(remaining_turn_weight=0.5)[1] < _down()[1]


def test_prefix_cache_weight_protects_warm_prefixes() -> None:
    """A larger prefix_cache_weight makes leaving a warm cache costlier."""
    assert Action.SWITCH == _up(prefix_cache_weight=0.0)[0]
    assert Action.STAY == _up(prefix_cache_weight=10.0)[0]


def test_switch_history_weight_damps_flapping() -> None:
    """Recent switches cost more with a larger switch_history_weight."""
    flapping = on_model(MEDIUM_MI300, switch_times=(995.0, 990.0), switch_count=2)
    calm = make_config(general_refs=UP_REFS, knobs=SessionAwareKnobs(switch_history_weight=0.0))
    strict = make_config(general_refs=UP_REFS, knobs=SessionAwareKnobs(switch_history_weight=5.0))
    assert Action.SWITCH == _net(calm, flapping, FRONTIER)[0]
    assert Action.STAY == _net(strict, flapping, FRONTIER)[0]
    assert _net(make_config(general_refs=UP_REFS), flapping, FRONTIER)[1] < _up()[1]


def test_cache_half_life_cools_the_prefix() -> None:
    """A short cache half-life means less warmth to lose, so a switch costs less."""
    assert _down(cache_half_life_seconds=1.0)[1] > _down()[1]


def test_warmth_uses_this_sessions_evidence_for_this_model_only() -> None:
    """A prefix resident on one model makes only that model warm."""
    state = on_model(FRONTIER, cached_ratio=0.9)
    knobs = SessionAwareKnobs()
    own = warmth_of(
        state=state,
        current=FRONTIER,
        context_tokens=20_000,
        knobs=knobs,
        default_ratio=0.5,
        now=1000.0,
    )
    other = warmth_of(
        state=state,
        current=SMALL,
        context_tokens=20_000,
        knobs=knobs,
        default_ratio=0.5,
        now=1000.0,
    )
    assert pytest.approx(19_000 * 0.9 * 0.5 ** (10 / 300)) == own.warm_tokens
    assert 0.0 == other.warm_tokens


def test_prior_ratio_applies_before_any_warm_turn() -> None:
    """Without a learned reuse ratio the prior default_cache_hit_ratio is used."""
    state = on_model(FRONTIER, cached_ratio=None)
    warmth = warmth_of(
        state=state,
        current=FRONTIER,
        context_tokens=20_000,
        knobs=SessionAwareKnobs(cache_half_life_seconds=0.0),
        default_ratio=0.8,
        now=1000.0,
    )
    assert (False, 0.8, 0.8 * 19_000) == (warmth.evidence, warmth.ratio, warmth.warm_tokens)


def test_longer_warm_context_raises_the_checkout() -> None:
    """The checkout grows with the warm prefix size (tokens times price delta)."""
    config = make_config(general_refs=EASY_REFS)
    short, _ = decide(
        on_model(FRONTIER, context_tokens=2_000), facts(context_tokens=2_000), config, 1000.0
    )
    long, _ = decide(on_model(FRONTIER), facts(), config, 1000.0)

    def checkout(d: Any) -> float:
        return float(next(t.checkout for t in d.trace.candidates if t.physical == SMALL))

    assert checkout(long) < checkout(short) <= 0.0


def test_quality_gap_prior_overrides_configured_gap() -> None:
    """A replay prior with enough samples replaces the config's quality difference."""
    priors = Priors(
        quality_gap={("general", MEDIUM_MI300, FRONTIER): PriorEntry(0.0, samples=10_000)},
    )
    config = make_config(general_refs=UP_REFS, priors=priors)
    assert Action.STAY == _net(config, on_model(MEDIUM_MI300), FRONTIER)[0]


def test_low_sample_prior_is_rejected() -> None:
    """A replay prior under min_samples is ignored (the configured default applies)."""
    priors = Priors(quality_gap={("general", MEDIUM_MI300, FRONTIER): PriorEntry(0.0, samples=3)})
    config = make_config(general_refs=UP_REFS, priors=priors)
    assert Action.SWITCH == _net(config, on_model(MEDIUM_MI300), FRONTIER)[0]


def test_prior_lookup_shrinks_and_trusts_config() -> None:
    """Replay priors shrink towards the default; config overrides are used as is."""
    priors = Priors(
        remaining_turns={
            "a": PriorEntry(28.0, samples=20),
            "b": PriorEntry(2.0, source=PriorSource.CONFIG),
        },
        min_samples=20,
        default_remaining_turns=8.0,
    )
    assert (18.0, PriorSource.REPLAY) == (
        priors.lookup_remaining_turns("a").value,
        priors.lookup_remaining_turns("a").source,
    )
    assert 2.0 == priors.lookup_remaining_turns("b").value
    rejected = Priors(remaining_turns={"a": PriorEntry(28.0, samples=1)}).lookup_remaining_turns(
        "a"
    )
    assert (8.0, True) == (rejected.value, rejected.rejected)


def test_trace_terms_sum_to_net() -> None:
    """Every candidate's terms add up to its net value (one unit, no hidden term)."""
    decision, _ = decide(on_model(FRONTIER), facts(), make_config(), 1000.0)
    for t in decision.trace.candidates:
        total = (
            t.quality_gain
            + t.turn_cost_delta
            + t.future_cost_delta
            + t.checkout
            + t.handoff
            + t.history
            + t.continuity
            + t.stay_bias
        )
        assert pytest.approx(t.net) == total


def test_upgrade_quick_downgrade_slow() -> None:
    """Defaults move a warm session up for quality but keep a frontier prefix over saving cents."""
    up, _ = decide(
        on_model(SMALL),
        facts(),
        make_config(general_refs=(ModelRef(FRONTIER), ModelRef(SMALL))),
        1000.0,
    )
    down, _ = decide(on_model(FRONTIER), facts(), make_config(), 1000.0)
    assert (Action.SWITCH, Action.STAY) == (up.action, down.action)
