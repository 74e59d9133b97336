"""Hard locks: tool loops and provider state keep their owner; no economics override them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from policy_builders import (
    FRONTIER,
    MEDIUM_H100,
    MEDIUM_MI300,
    SMALL,
    UP_REFS,
    facts,
    make_config,
    on_model,
)

from saar.policy import (
    Action,
    BackendPin,
    LearningConfig,
    Phase,
    Pin,
    PolicyConfig,
    ProviderState,
    Reason,
    ResponseFacts,
    Scope,
    SessionAwareKnobs,
    SessionState,
    apply_response,
    decide,
)

PREVIOUS = (ProviderState("previous_response_id", Pin.BACKEND),)
REASONING = (ProviderState("encrypted_reasoning", Pin.MODEL),)


def test_tool_result_returns_to_the_model_that_issued_the_call() -> None:
    """A tool result goes back to the call's owner, even when it is not the current model."""
    state = on_model(MEDIUM_MI300, open_calls=(("call-1", FRONTIER),))
    decision, new_state = decide(
        state, facts("ok", tool_result_ids=("call-1",)), make_config(), 1000.0
    )
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP, Phase.TOOL_LOOP, FRONTIER) == (
        decision.action,
        decision.reason,
        decision.phase,
        decision.target.key,
    )
    assert new_state is not None
    assert ("call-1",) == new_state.answering
    config = make_config()
    ok = apply_response(new_state, ResponseFacts("req-1", 200), config, 1001.0)
    assert ok is not None
    assert ((), ()) == (ok.open_calls, ok.answering)
    failed = apply_response(new_state, ResponseFacts("req-1", 503), config, 1001.0)
    assert failed is not None
    assert (("call-1", FRONTIER),) == failed.open_calls


def test_tool_result_retried_after_5xx_still_knows_the_owner() -> None:
    """A tool-result turn that got a 503 is retried on the call's owner, reason tool_loop."""
    config = make_config()
    state = on_model(MEDIUM_MI300, open_calls=(("call-1", FRONTIER),))
    turn = facts("ok", tool_result_ids=("call-1",))
    _, pending = decide(state, turn, config, 1000.0)
    failed = apply_response(pending, ResponseFacts("req-1", 503), config, 1001.0)
    retry, _ = decide(failed, replace(turn, request_id="req-2"), config, 1002.0)
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP, FRONTIER) == (
        retry.action,
        retry.reason,
        retry.target.key,
    )


def test_tool_result_after_idle_gap_still_goes_back() -> None:
    """The tool lock ignores the idle boundary: a late tool result still belongs to its owner."""
    state = on_model(FRONTIER, now=1000.0, last_seen=0.0, open_calls=(("call-1", FRONTIER),))
    decision, _ = decide(state, facts("ok", tool_result_ids=("call-1",)), make_config(), 100_000.0)
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP, FRONTIER) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_parallel_calls_answered_together_release_the_lock() -> None:
    """Two calls answered in one message close both: the next user turn is not locked."""
    config = make_config()
    calls = (("call-a", FRONTIER), ("call-b", FRONTIER))
    state = on_model(FRONTIER, open_calls=calls)
    locked, state2 = decide(
        state, facts("ok", tool_result_ids=("call-a", "call-b")), config, 1000.0
    )
    assert Action.HARD_LOCK == locked.action
    state2 = apply_response(state2, ResponseFacts("req-1", 200), config, 1000.5)
    assert state2 is not None
    assert () == state2.open_calls
    follow, _ = decide(state2, facts("thanks", request_id="req-2"), config, 1001.0)
    assert Action.HARD_LOCK != follow.action


def test_partially_answered_parallel_calls_stay_open() -> None:
    """Answering one of two calls keeps the other open (and the request locked)."""
    state = on_model(FRONTIER, open_calls=(("call-a", FRONTIER), ("call-b", FRONTIER)))
    request = facts("ok", tool_result_ids=("call-a",), pending_tool_call_ids=("call-b",))
    config = make_config()
    decision, new_state = decide(state, request, config, 1000.0)
    assert Action.HARD_LOCK == decision.action
    new_state = apply_response(new_state, ResponseFacts("req-1", 200), config, 1000.5)
    assert new_state is not None
    assert (("call-b", FRONTIER),) == new_state.open_calls


def test_dangling_tool_call_locks_to_its_owner() -> None:
    """Unanswered calls in the request (pending_tool_call_ids) also lock to their owner."""
    state = on_model(SMALL, open_calls=(("call-1", FRONTIER),))
    decision, _ = decide(
        state, facts("hm", pending_tool_call_ids=("call-1",)), make_config(), 1000.0
    )
    assert (Reason.TOOL_LOOP, FRONTIER) == (decision.reason, decision.target.key)


def test_tool_loop_without_recorded_ids_uses_last_model() -> None:
    """Call ids memory never saw: the session's last model, with a distinct reason."""
    state = on_model(MEDIUM_MI300)
    decision, _ = decide(state, facts("ok", tool_result_ids=("call-x",)), make_config(), 1000.0)
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP_LAST_MODEL, MEDIUM_MI300) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def _switched(config: PolicyConfig | None = None) -> tuple[PolicyConfig, SessionState]:
    """A session committed on MEDIUM_MI300 whose new user turn (req-1) switched to FRONTIER.

    The switch's response is not learned yet (``apply_response`` runs off the hot path), so
    memory reads committed = the old model, pending = the new one.
    """
    config = config if config is not None else make_config(general_refs=UP_REFS)
    decision, state = decide(on_model(MEDIUM_MI300), facts("hello"), config, 1000.0)
    assert (Action.SWITCH, FRONTIER) == (decision.action, decision.target.key)
    assert state is not None
    assert (MEDIUM_MI300, FRONTIER, "req-1") == (
        state.committed,
        state.pending,
        state.pending_request,
    )
    return config, state


def test_tool_result_before_the_switch_is_learned_goes_to_the_new_model() -> None:
    """The race of design 0004: a tool result for calls the switched-to model issued, decided
    before that turn's response is learned, goes to the new model, not back to the old one.

    A tool result proves the turn that issued the calls answered, and trailing tool results
    answer the conversation's latest assistant message: the pending turn's.
    """
    config, state = _switched()
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    decision, new_state = decide(state, result, config, 1001.0)
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP_LAST_MODEL, Phase.TOOL_LOOP, FRONTIER) == (
        decision.action,
        decision.reason,
        decision.phase,
        decision.target.key,
    )
    # The switch's response, learned late, still commits the new model (and counts the switch).
    assert new_state is not None
    late = apply_response(new_state, ResponseFacts("req-1", 200, physical=FRONTIER), config, 1002.0)
    assert late is not None
    assert (FRONTIER, FRONTIER, 1) == (late.committed, late.pending, late.switch_count)


def test_dangling_call_before_the_switch_is_learned_goes_to_the_new_model() -> None:
    """Unanswered calls (pending_tool_call_ids) of the unlearned turn lock to it as well."""
    config, state = _switched()
    dangling = facts("hm", request_id="req-2", pending_tool_call_ids=("call-x",))
    decision, _ = decide(state, dangling, config, 1001.0)
    assert (Reason.TOOL_LOOP_LAST_MODEL, FRONTIER) == (decision.reason, decision.target.key)


def test_tool_loop_after_a_failed_switch_falls_back_to_the_committed_model() -> None:
    """A 5xx drops the pending model: the failed turn issued nothing, the last model that
    answered is the committed one again."""
    config, state = _switched()
    failed = apply_response(state, ResponseFacts("req-1", 503, physical=FRONTIER), config, 1001.0)
    assert failed is not None
    assert (MEDIUM_MI300, None) == (failed.committed, failed.pending)
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    decision, _ = decide(failed, result, config, 1002.0)
    assert (Reason.TOOL_LOOP_LAST_MODEL, MEDIUM_MI300) == (decision.reason, decision.target.key)


def test_retried_tool_result_after_the_switch_is_learned_stays_on_the_new_model() -> None:
    """Tool result locked to the pending model, switch learned, tool result 503: the retry
    stays on the new model, found by the call id decide remembered (reason tool_loop)."""
    config, state = _switched()
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    _, locked = decide(state, result, config, 1001.0)
    learned = apply_response(locked, ResponseFacts("req-1", 200, physical=FRONTIER), config, 1002.0)
    failed = apply_response(learned, ResponseFacts("req-2", 503, physical=FRONTIER), config, 1003.0)
    assert failed is not None
    assert (FRONTIER, None) == (failed.committed, failed.pending)
    retry, _ = decide(failed, replace(result, request_id="req-3"), config, 1004.0)
    assert (Reason.TOOL_LOOP, FRONTIER) == (retry.reason, retry.target.key)


@pytest.mark.parametrize("switch_learned", ["never", "after_the_retry", "before_the_retry"])
def test_retried_tool_result_failed_before_the_switch_is_learned_stays_on_the_new_model(
    switch_learned: str,
) -> None:
    """Out-of-order learning: the tool-result turn (locked to the pending model by inference)
    fails, and its 503 is learned before the switch's 200, or the 200 never is. The 503 drops
    ``pending``, but decide remembered the inferred owner against the call ids: the retry still
    goes to the new model, by id (reason tool_loop), not back to the old committed one."""
    config, state = _switched()
    switch_ok = ResponseFacts("req-1", 200, physical=FRONTIER)
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    decision, locked = decide(state, result, config, 1001.0)
    assert (Reason.TOOL_LOOP_LAST_MODEL, FRONTIER) == (decision.reason, decision.target.key)
    assert locked is not None
    assert ((("call-x", FRONTIER),), ("call-x",)) == (locked.open_calls, locked.answering)
    failed = apply_response(locked, ResponseFacts("req-2", 503, physical=FRONTIER), config, 1002.0)
    if switch_learned == "before_the_retry":
        failed = apply_response(failed, switch_ok, config, 1003.0)
    assert failed is not None
    assert (("call-x", FRONTIER),) == failed.open_calls
    retry, retried = decide(failed, replace(result, request_id="req-3"), config, 1004.0)
    assert (Action.HARD_LOCK, Reason.TOOL_LOOP, FRONTIER) == (
        retry.action,
        retry.reason,
        retry.target.key,
    )
    if switch_learned == "after_the_retry":
        retried = apply_response(retried, switch_ok, config, 1004.5)
        assert retried is not None
        assert (FRONTIER, FRONTIER, "req-3") == (
            retried.committed,
            retried.pending,
            retried.pending_request,
        )
    # The retry's success closes the call: the inferred entry does not outlive the exchange.
    ok = apply_response(retried, ResponseFacts("req-3", 200, physical=FRONTIER), config, 1005.0)
    assert ok is not None
    assert ((), (), FRONTIER) == (ok.open_calls, ok.answering, ok.committed)


def test_inferred_tool_owner_closes_on_success_and_keeps_dangling_calls_open() -> None:
    """Inferred owners go through the same open/answering bookkeeping as observed ones: the
    answered ids close on the 2xx, ids the request still leaves unanswered stay open."""
    config, state = _switched()
    request = facts(
        "ok", request_id="req-2", tool_result_ids=("call-a",), pending_tool_call_ids=("call-b",)
    )
    decision, locked = decide(state, request, config, 1001.0)
    assert (Reason.TOOL_LOOP_LAST_MODEL, FRONTIER) == (decision.reason, decision.target.key)
    assert locked is not None
    ok = apply_response(locked, ResponseFacts("req-2", 200, physical=FRONTIER), config, 1002.0)
    assert ok is not None
    assert ((("call-b", FRONTIER),), ()) == (ok.open_calls, ok.answering)


def test_observed_tool_call_owner_replaces_an_inferred_one() -> None:
    """The issuing turn's response, learned late, names the owner it observed: it replaces
    the inferred entry for the same call id instead of sitting behind it."""
    config, state = _switched()
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    _, locked = decide(state, result, config, 1001.0)
    late = apply_response(
        locked,
        ResponseFacts("req-1", 200, physical=MEDIUM_H100, tool_call_ids=("call-x",)),
        config,
        1002.0,
    )
    assert late is not None
    assert (("call-x", MEDIUM_H100),) == late.open_calls


def test_session_scope_keeps_the_committed_fallback() -> None:
    """Under scope session several conversations share one memory key: the pending turn may
    belong to another conversation, so the fallback stays the committed model."""
    config = make_config(general_refs=UP_REFS, learning=LearningConfig(scope=Scope.SESSION))
    config, state = _switched(config)
    result = facts("ok", request_id="req-2", tool_result_ids=("call-x",))
    decision, _ = decide(state, result, config, 1001.0)
    assert (Reason.TOOL_LOOP_LAST_MODEL, MEDIUM_MI300) == (decision.reason, decision.target.key)


def test_tool_loop_with_lost_memory_says_owner_unknown() -> None:
    """With no memory the owner cannot be named: baseline with tool_loop_owner_unknown."""
    decision, state = decide(None, facts("ok", tool_result_ids=("call-1",)), make_config(), 1000.0)
    assert (Action.ESTABLISH_BASELINE, Reason.TOOL_LOOP_OWNER_UNKNOWN, SMALL) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )
    assert state is not None


def test_tool_loop_lock_knob_off_lets_economics_decide() -> None:
    """tool_loop_hard_lock false: the tool result is routed like any other turn."""
    state = on_model(SMALL, open_calls=(("call-1", FRONTIER),))
    config = make_config(knobs=SessionAwareKnobs(tool_loop_hard_lock=False))
    decision, _ = decide(state, facts("ok", tool_result_ids=("call-1",)), config, 1000.0)
    assert (Action.STAY, SMALL) == (decision.action, decision.target.key)


def test_unhealthy_owner_keeps_the_tool_lock() -> None:
    """Failures of a locked backend do not break the tool loop."""
    state = on_model(FRONTIER, open_calls=(("call-1", FRONTIER),), failures=((FRONTIER, 5),))
    decision, _ = decide(state, facts("ok", tool_result_ids=("call-1",)), make_config(), 1000.0)
    assert (Action.HARD_LOCK, FRONTIER) == (decision.action, decision.target.key)


def test_response_pin_from_another_conversation_routes_exactly_there() -> None:
    """A resolved previous_response_id routes to the minting model and affinity key."""
    pin = BackendPin(MEDIUM_H100, "ak-other-conversation")
    request = facts(
        "continue",
        conversation_id="c9",
        provider_state=PREVIOUS,
        previous_response_id="resp-1",
        response_pin=pin,
    )
    decision, state = decide(None, request, make_config(), 1000.0)
    assert (
        Action.HARD_LOCK,
        Reason.PROVIDER_STATE_PINNED,
        MEDIUM_H100,
        "ak-other-conversation",
    ) == (
        decision.action,
        decision.reason,
        decision.target.key,
        decision.affinity_key,
    )
    assert state is not None
    assert ("ak-other-conversation", MEDIUM_H100) == (state.pending_affinity, state.pending)


def test_backend_state_without_pin_keeps_last_model() -> None:
    """Backend-pinned state not in the index keeps the session's model and affinity key."""
    request = facts("continue", provider_state=PREVIOUS, previous_response_id="resp-1")
    decision, _ = decide(on_model(FRONTIER), request, make_config(), 1000.0)
    assert (Reason.PROVIDER_STATE_LAST_MODEL, FRONTIER, "ak-test") == (
        decision.reason,
        decision.target.key,
        decision.affinity_key,
    )


@pytest.mark.parametrize(
    ("state_kind", "reason"),
    [(PREVIOUS, Reason.PROVIDER_STATE_LAST_MODEL), (REASONING, Reason.PROVIDER_STATE_MODEL)],
)
def test_provider_state_before_the_switch_is_learned_goes_to_the_new_model(
    state_kind: tuple[ProviderState, ...], reason: Reason
) -> None:
    """The same race for provider state: a continuation of the unlearned switch's response
    (not in the response index yet) or its encrypted reasoning goes to the new model."""
    config, state = _switched()
    request = facts(
        "continue",
        request_id="req-2",
        provider_state=state_kind,
        previous_response_id="resp-new" if state_kind is PREVIOUS else None,
    )
    decision, _ = decide(state, request, config, 1001.0)
    assert (Action.HARD_LOCK, reason, FRONTIER, "ak-test") == (
        decision.action,
        decision.reason,
        decision.target.key,
        decision.affinity_key,
    )


def test_unlearned_pinned_turn_keeps_its_affinity_key_for_a_continuation() -> None:
    """The unlearned turn was routed by a response pin to another replica: a continuation of
    its response needs that replica (it holds the stored response), not the session's key."""
    config = make_config()
    pin = BackendPin(MEDIUM_H100, "ak-other-conversation")
    pinned = facts("go", provider_state=PREVIOUS, previous_response_id="resp-0", response_pin=pin)
    _, state = decide(on_model(MEDIUM_MI300), pinned, config, 1000.0)
    assert state is not None
    request = facts(
        "continue", request_id="req-2", provider_state=PREVIOUS, previous_response_id="resp-1"
    )
    decision, _ = decide(state, request, config, 1001.0)
    assert (Reason.PROVIDER_STATE_LAST_MODEL, MEDIUM_H100, "ak-other-conversation") == (
        decision.reason,
        decision.target.key,
        decision.affinity_key,
    )


def test_continuation_of_a_learned_response_keeps_the_committed_model() -> None:
    """A previous_response_id that memory already learned was minted by an answered turn, not
    by the unlearned pending one: the fallback stays the committed model."""
    config, state = _switched()
    state = replace(state, response_ids=("resp-old",))
    request = facts(
        "continue", request_id="req-2", provider_state=PREVIOUS, previous_response_id="resp-old"
    )
    decision, _ = decide(state, request, config, 1001.0)
    assert (Reason.PROVIDER_STATE_LAST_MODEL, MEDIUM_MI300) == (
        decision.reason,
        decision.target.key,
    )


def test_backend_state_with_lost_memory_says_owner_unknown() -> None:
    """Backend-pinned state with no pin and no memory: provider_state_owner_unknown."""
    request = facts("continue", provider_state=PREVIOUS, previous_response_id="resp-1")
    decision, _ = decide(None, request, make_config(), 1000.0)
    assert (Action.ESTABLISH_BASELINE, Reason.PROVIDER_STATE_OWNER_UNKNOWN) == (
        decision.action,
        decision.reason,
    )


def test_model_pinned_state_keeps_the_model() -> None:
    """Model-pinned state (encrypted reasoning) keeps the current model."""
    decision, _ = decide(
        on_model(FRONTIER), facts("go", provider_state=REASONING), make_config(), 1000.0
    )
    assert (Action.HARD_LOCK, Reason.PROVIDER_STATE_MODEL, FRONTIER) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_model_pinned_state_moves_pool_when_backend_unhealthy() -> None:
    """Model-pinned state may move to another pool of the same model when the pool fails."""
    state = on_model(MEDIUM_MI300, failures=((MEDIUM_MI300, 2),))
    decision, _ = decide(state, facts("go", provider_state=REASONING), make_config(), 1000.0)
    assert (Action.SWITCH, Reason.BACKEND_UNHEALTHY, MEDIUM_H100) == (
        decision.action,
        decision.reason,
        decision.target.key,
    )


def test_portability_lock_knob_off_ignores_provider_state() -> None:
    """context_portability_hard_lock false: neither pins nor provider state lock the turn."""
    pin = BackendPin(MEDIUM_H100, "ak-x")
    request = facts("hello", provider_state=PREVIOUS, previous_response_id="r", response_pin=pin)
    config = make_config(knobs=SessionAwareKnobs(context_portability_hard_lock=False))
    decision, _ = decide(on_model(SMALL), request, config, 1000.0)
    assert (Action.STAY, SMALL) == (decision.action, decision.target.key)


def test_removed_owner_is_reported_not_replaced() -> None:
    """A call owner no longer configured is reported unknown, not swapped for the last model."""
    state = on_model(SMALL, open_calls=(("call-1", "gone@nowhere"),))
    decision, _ = decide(state, facts("ok", tool_result_ids=("call-1",)), make_config(), 1000.0)
    assert (Action.ESTABLISH_BASELINE, Reason.TOOL_LOOP_OWNER_UNKNOWN) == (
        decision.action,
        decision.reason,
    )
