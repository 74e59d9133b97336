"""decide: modes, fallback, baseline, resets, guards, and the session key."""

from __future__ import annotations

import json
from dataclasses import replace

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
    AdaptationMode,
    LearningConfig,
    Phase,
    Reason,
    Scope,
    SelectionMethod,
    SessionAwareKnobs,
    decide,
    protected_key,
)

EASY = EASY_REFS
UP = UP_REFS


def test_first_turn_establishes_baseline_with_pending_model() -> None:
    """A new key routes the base choice and remembers it as pending, not committed."""
    decision, state = decide(None, facts("please refactor"), make_config(), 100.0)
    assert (Action.ESTABLISH_BASELINE, Reason.NEW_KEY, Phase.NEW) == (
        decision.action,
        decision.reason,
        decision.phase,
    )
    assert FRONTIER == decision.target.key
    assert state is not None
    assert (None, FRONTIER, "req-1", 1) == (
        state.committed,
        state.pending,
        state.pending_request,
        state.turn_count,
    )
    assert "req-1" == decision.replay_id


def test_affinity_key_is_stable_per_protected_key() -> None:
    """The affinity key is derived from the protected key and kept in memory across turns."""
    config = make_config()
    first, state = decide(None, facts(), config, 100.0)
    second, _ = decide(state, facts(request_id="req-2"), config, 101.0)
    assert first.affinity_key == second.affinity_key
    other, _ = decide(None, facts(conversation_id="c2"), config, 100.0)
    assert first.affinity_key != other.affinity_key


def test_missing_session_context_falls_back() -> None:
    """Without a conversation id the request is routed by fallback_method and no memory is kept."""
    config = make_config(knobs=SessionAwareKnobs(fallback_method=SelectionMethod.HYBRID))
    decision, state = decide(None, facts(conversation_id=None), config, 100.0)
    assert (Action.FALLBACK, Reason.NO_SESSION_CONTEXT, None) == (
        decision.action,
        decision.reason,
        state,
    )
    assert MEDIUM_MI300 == decision.target.key


def test_fallback_method_static_picks_first_ref() -> None:
    """The documented default fallback_method (static) routes the first ref."""
    decision, _ = decide(None, facts(conversation_id=None), make_config(), 100.0)
    assert SMALL == decision.target.key


def test_session_scope_keys_on_session_id() -> None:
    """Under scope session two conversations share memory; under conversation they do not."""
    session = make_config(learning=LearningConfig(scope=Scope.SESSION))
    conversation = make_config()
    assert protected_key(facts(conversation_id="c1"), session) == protected_key(
        facts(conversation_id="c2"), session
    )
    assert protected_key(facts(conversation_id="c1"), conversation) != protected_key(
        facts(conversation_id="c2"), conversation
    )
    assert protected_key(facts(session_id=None), session) is None


def test_protected_key_parts_cannot_collide() -> None:
    """("a/b", "c") and ("a", "b/c") give different keys (length-prefixed parts)."""
    config = make_config()
    one = protected_key(facts(session_id="a/b", conversation_id="c"), config)
    two = protected_key(facts(session_id="a", conversation_id="b/c"), config)
    assert one != two


def test_bypass_mode_routes_base_and_keeps_memory() -> None:
    """mode bypass: the base choice is routed and router memory is returned untouched."""
    state = on_model(FRONTIER, open_calls=(("call-1", FRONTIER),))
    config = make_config(mode=AdaptationMode.BYPASS)
    decision, new_state = decide(state, facts("ok", tool_result_ids=("call-1",)), config, 1000.0)
    assert (Action.BYPASS, Reason.DECISION_BYPASS, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )
    assert state is new_state


def test_learning_disabled_bypasses_non_session_aware_decisions() -> None:
    """With Router Learning off a static decision is not adapted; a session_aware one still is."""
    off = LearningConfig(enabled=False)
    static = make_config(learning=off, general_method=SelectionMethod.STATIC)
    decision, _ = decide(on_model(FRONTIER), facts(), static, 1000.0)
    assert (Action.BYPASS, Reason.LEARNING_DISABLED) == (decision.action, decision.reason)
    aware = make_config(learning=off)
    decision, _ = decide(on_model(FRONTIER), facts(), aware, 1000.0)
    assert Action.STAY == decision.action


def test_observe_mode_records_but_routes_base() -> None:
    """mode observe: the would-be action is reported, the base choice is routed and remembered."""
    state = on_model(FRONTIER, open_calls=(("call-1", FRONTIER),))
    config = make_config(mode=AdaptationMode.OBSERVE)
    decision, new_state = decide(state, facts("ok", tool_result_ids=("call-1",)), config, 1000.0)
    assert (Action.HARD_LOCK, AdaptationMode.OBSERVE) == (decision.action, decision.mode)
    assert (SMALL, FRONTIER) == (
        decision.target.key,
        decision.proposed.key if decision.proposed else "",
    )
    assert new_state is not None
    assert SMALL == new_state.pending


def test_base_agreeing_with_current_stays() -> None:
    """When the base already proposes the current model the session stays (base_agrees)."""
    decision, _ = decide(on_model(SMALL), facts(), make_config(), 1000.0)
    assert (Action.STAY, Reason.BASE_AGREES, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_idle_boundary_reselects() -> None:
    """After idle_timeout_seconds the choice reopens: soft stickiness is off (reselect)."""
    config = make_config(general_refs=EASY)
    stays, _ = decide(on_model(FRONTIER, now=1000.0), facts(), config, 1000.0)
    assert Action.STAY == stays.action
    idle = on_model(FRONTIER, now=1000.0, last_seen=500.0, evidence_at=500.0)
    decision, _ = decide(idle, facts(), config, 1000.0)
    assert (Action.RESELECT, Reason.IDLE_RESET, Phase.IDLE_RESET, SMALL) == (
        decision.action,
        decision.reason,
        decision.phase,
        decision.target.key,
    )


def test_idle_timeout_knob_moves_the_boundary() -> None:
    """A shorter idle_timeout_seconds turns the same gap into a reset boundary."""
    state = on_model(FRONTIER, now=1000.0, last_seen=900.0)
    long_timeout = make_config(general_refs=EASY)
    short_timeout = make_config(
        general_refs=EASY, knobs=SessionAwareKnobs(idle_timeout_seconds=60.0)
    )
    assert Action.STAY == decide(state, facts(), long_timeout, 1000.0)[0].action
    assert Action.RESELECT == decide(state, facts(), short_timeout, 1000.0)[0].action


def test_decision_drift_reselects_only_when_enabled() -> None:
    """A request matching another decision's signals reopens the choice only with drift on."""
    state = on_model(MEDIUM_MI300, decision="general")
    on = make_config()
    off = make_config(knobs=SessionAwareKnobs(decision_drift_reset=False))
    drifted, _ = decide(state, facts("debug this traceback"), on, 1000.0)
    assert (Action.RESELECT, Reason.DECISION_DRIFT, FRONTIER, "coding") == (
        drifted.action,
        drifted.reason,
        drifted.target.key,
        drifted.decision_name,
    )
    kept, _ = decide(state, facts("debug this traceback"), off, 1000.0)
    assert Action.RESELECT != kept.action
    assert "coding" == kept.decision_name


def test_turn_without_signals_keeps_the_session_decision() -> None:
    """A bare "continue" matches no decision: the session stays in its decision, no drift."""
    state = on_model(FRONTIER, decision="coding")
    decision, new_state = decide(state, facts("continue"), make_config(general_refs=EASY), 1000.0)
    assert ("coding", "session", False) == (
        decision.decision_name,
        decision.trace.decision_source,
        decision.trace.decision_drift,
    )
    assert (Action.STAY, FRONTIER) == (decision.action, decision.target.key)
    assert "coding" == new_state.decision
    fresh, _ = decide(None, facts("continue"), make_config(general_refs=EASY), 1000.0)
    assert ("general", "default") == (fresh.decision_name, fresh.trace.decision_source)


def test_long_turn_without_signals_returns_to_the_default_decision() -> None:
    """A substantive message with no signal is the default decision again: no permanent pin."""
    state = on_model(FRONTIER, decision="coding")
    text = "what is a good name for the new settings page in the admin area"
    decision, _ = decide(state, facts(text), make_config(general_refs=EASY), 1000.0)
    assert ("general", "default") == (decision.decision_name, decision.trace.decision_source)


def test_follow_up_after_idle_returns_to_the_default_decision() -> None:
    """After the idle timeout even "continue" no longer inherits the session's decision."""
    state = on_model(FRONTIER, decision="coding", last_seen=0.0)
    decision, _ = decide(state, facts("continue"), make_config(general_refs=EASY), 10_000.0)
    assert ("general", "default") == (decision.decision_name, decision.trace.decision_source)


def test_follow_up_max_words_sets_what_counts_as_a_follow_up() -> None:
    """follow_up_max_words bounds a carried follow-up; 0 sends follow-ups to the default."""
    state = on_model(FRONTIER, decision="coding")
    text = "yes go on with that now"  # six words
    default = make_config(general_refs=EASY)
    wider = make_config(general_refs=EASY, knobs=SessionAwareKnobs(follow_up_max_words=6))
    off = make_config(general_refs=EASY, knobs=SessionAwareKnobs(follow_up_max_words=0))
    assert "general" == decide(state, facts(text), default, 1000.0)[0].decision_name
    assert ("coding", "session") == (
        decide(state, facts(text), wider, 1000.0)[0].decision_name,
        decide(state, facts(text), wider, 1000.0)[0].trace.decision_source,
    )
    dropped, _ = decide(state, facts("continue"), off, 1000.0)
    assert ("general", "default") == (dropped.decision_name, dropped.trace.decision_source)
    # Tool results still continue the task whatever the knob says.
    looped = on_model(FRONTIER, decision="coding", open_calls=(("c1", FRONTIER),))
    turn = facts("", tool_result_ids=("c1",))
    kept, _ = decide(looped, turn, off, 1000.0)
    assert ("coding", "session", FRONTIER) == (
        kept.decision_name,
        kept.trace.decision_source,
        kept.target.key,
    )


def test_tool_results_keep_the_session_decision() -> None:
    """A tool-result turn (no user text) stays in the session's decision."""
    state = on_model(FRONTIER, decision="coding", open_calls=(("c1", FRONTIER),))
    turn = facts("", tool_result_ids=("c1",))
    decision, _ = decide(state, turn, make_config(general_refs=EASY), 1000.0)
    assert ("coding", "session") == (decision.decision_name, decision.trace.decision_source)


def test_drift_to_decision_without_current_model_follows_base() -> None:
    """Drift into a decision whose refs lack the current model reselects the base choice."""
    state = on_model(SMALL, decision="general")
    decision, _ = decide(state, facts("refactor it"), make_config(), 1000.0)
    assert (Action.RESELECT, FRONTIER) == (decision.action, decision.target.key)


def test_new_conversation_establishes_baseline() -> None:
    """Under scope conversation a new conversation id is a new key: baseline, not memory."""
    config = make_config()
    _, state = decide(None, facts("refactor"), config, 100.0)
    assert state is not None
    key = protected_key(facts(conversation_id="c2"), config)
    assert key != protected_key(facts(), config)
    decision, _ = decide(None, facts(conversation_id="c2"), config, 101.0)
    assert Action.ESTABLISH_BASELINE == decision.action


def test_min_turns_before_switch_holds_early_turns() -> None:
    """A session younger than min_turns_before_switch stays even when a switch pays."""
    state = on_model(MEDIUM_MI300, turns=1)
    one = make_config(general_refs=UP)
    two = make_config(general_refs=UP, knobs=SessionAwareKnobs(min_turns_before_switch=2))
    assert Action.SWITCH == decide(state, facts(), one, 1000.0)[0].action
    held, _ = decide(state, facts(), two, 1000.0)
    assert (Action.STAY, Reason.MIN_TURNS, MEDIUM_MI300) == (
        held.action,
        held.reason,
        held.target.key,
    )


def test_unhealthy_backend_moves_an_unlocked_session() -> None:
    """Repeated failures of the current backend move an unlocked session (backend_unhealthy)."""
    config = make_config(general_refs=EASY)
    state = on_model(FRONTIER, failures=((FRONTIER, 2),))
    decision, _ = decide(state, facts(), config, 1000.0)
    assert (Action.SWITCH, Reason.BACKEND_UNHEALTHY, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )
    once = on_model(FRONTIER, failures=((FRONTIER, 1),))
    assert Action.STAY == decide(once, facts(), config, 1000.0)[0].action


def test_unhealthy_backend_that_base_prefers_moves_to_best_other() -> None:
    """When the failing model is also the base choice the best other candidate is taken."""
    state = on_model(SMALL, failures=((SMALL, 3),))
    decision, _ = decide(state, facts(), make_config(), 1000.0)
    assert (Action.SWITCH, Reason.BACKEND_UNHEALTHY) == (decision.action, decision.reason)
    assert SMALL != decision.target.key


def test_client_named_model_forces_move_off_another_model() -> None:
    """A client that names a configured model is never served by the session's other model."""
    decision, _ = decide(on_model(FRONTIER), facts(logical_model="small-8b"), make_config(), 1000.0)
    assert (Action.SWITCH, Reason.CURRENT_NOT_CANDIDATE, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_unknown_current_model_re_establishes() -> None:
    """A remembered model that is no longer configured cannot be kept: baseline again."""
    decision, _ = decide(on_model("gone@nowhere"), facts(), make_config(), 1000.0)
    assert (Action.ESTABLISH_BASELINE, SMALL) == (decision.action, decision.target.key)


def test_turn_count_and_memory_update() -> None:
    """Each decision increments the turn count and records decision, phase and last seen."""
    state = on_model(SMALL, turns=4)
    _, new_state = decide(state, facts(), make_config(), 1234.0)
    assert new_state is not None
    assert (5, "general", "user_turn", 1234.0, 20_000) == (
        new_state.turn_count,
        new_state.decision,
        new_state.phase,
        new_state.last_seen,
        new_state.context_tokens,
    )
    assert replace(state, turn_count=5).committed == new_state.committed


def test_idle_reopens_to_base_even_against_quality() -> None:
    """An idle boundary reopens to the base choice: no sticky frontier after a long pause."""
    idle = on_model(FRONTIER, now=1000.0, last_seen=100.0, evidence_at=100.0)
    decision, _ = decide(idle, facts(), make_config(), 1000.0)
    assert (Action.RESELECT, Reason.IDLE_RESET, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_trace_is_json_serialisable() -> None:
    """The trace round-trips through json with base scores and candidate terms."""
    decision, _ = decide(on_model(FRONTIER), facts(), make_config(), 1000.0)
    data = json.loads(json.dumps(decision.trace.to_dict()))
    assert (3, 2, "stay", FRONTIER) == (
        len(data["base_scores"]),
        len(data["candidates"]),
        data["action"],
        data["current"],
    )


def test_unhealthy_threshold_knob() -> None:
    """unhealthy_after_failures sets how many consecutive failures move a session."""
    state = on_model(FRONTIER, failures=((FRONTIER, 1),))
    strict = make_config(general_refs=EASY, knobs=SessionAwareKnobs(unhealthy_after_failures=1))
    assert Reason.BACKEND_UNHEALTHY == decide(state, facts(), strict, 1000.0)[0].reason
    assert (
        Reason.BACKEND_UNHEALTHY
        != decide(state, facts(), make_config(general_refs=EASY), 1000.0)[0].reason
    )


def test_session_scope_keeps_the_model_across_conversations() -> None:
    """Under scope session a new conversation continues the session's memory."""
    config = make_config(learning=LearningConfig(scope=Scope.SESSION))
    _, state = decide(None, facts("refactor", conversation_id="c1"), config, 100.0)
    decision, _ = decide(
        state, facts("refactor", conversation_id="c2", request_id="r2"), config, 101.0
    )
    assert (Action.STAY, Reason.BASE_AGREES, FRONTIER) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )
