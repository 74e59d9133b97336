"""apply_response: pending→committed, tool calls, response ids, cache evidence, failures."""

from __future__ import annotations

import pytest
from policy_builders import EASY_REFS, FRONTIER, SMALL, facts, make_config, on_model

from saar.policy import (
    Action,
    BackendPin,
    Reason,
    ResponseFacts,
    SessionState,
    apply_response,
    decide,
    index_entries,
    response_index_key,
)


def test_success_commits_pending_model() -> None:
    """A 2xx answer commits the pending model of that request."""
    config = make_config()
    _, state = decide(None, facts("refactor"), config, 100.0)
    state = apply_response(state, ResponseFacts("req-1", 200), config, 101.0)
    assert state is not None
    assert (FRONTIER, None, None) == (state.committed, state.pending, state.pending_request)


def test_switch_is_counted_on_commit_not_on_decision() -> None:
    """A switch counts only when its response succeeds; a failed switch keeps the old model."""
    config = make_config(general_refs=EASY_REFS, knobs=None)
    state = on_model(FRONTIER, now=1000.0, last_seen=0.0, evidence_at=0.0)
    decision, pending = decide(state, facts(), config, 1000.0)
    assert (Action.RESELECT, SMALL) == (decision.action, decision.target.key)
    assert pending is not None
    assert (0, FRONTIER) == (pending.switch_count, pending.committed)
    ok = apply_response(pending, ResponseFacts("req-1", 200), config, 1001.0)
    assert ok is not None
    assert (1, SMALL, (1001.0,)) == (ok.switch_count, ok.committed, ok.switch_times)
    failed = apply_response(pending, ResponseFacts("req-1", 503), config, 1001.0)
    assert failed is not None
    assert (0, FRONTIER, None, 1) == (
        failed.switch_count,
        failed.committed,
        failed.pending,
        failed.failures_of(SMALL),
    )


def test_tool_calls_are_recorded_with_the_serving_model() -> None:
    """Emitted tool-call ids become open calls owned by the model that served them."""
    config = make_config()
    _, state = decide(None, facts("refactor"), config, 100.0)
    state = apply_response(
        state, ResponseFacts("req-1", 200, tool_call_ids=("c1", "c2")), config, 101.0
    )
    assert state is not None
    assert (("c1", FRONTIER), ("c2", FRONTIER)) == state.open_calls


def test_failure_on_locked_turn_keeps_the_lock() -> None:
    """A 5xx on a tool-result turn keeps the call open: the retry goes to the same owner."""
    config = make_config()
    state = on_model(FRONTIER, open_calls=(("c1", FRONTIER),))
    request = facts("ok", tool_result_ids=("c1",))
    _, pending = decide(state, request, config, 1000.0)
    failed = apply_response(pending, ResponseFacts("req-1", 503), config, 1001.0)
    assert failed is not None
    retry, _ = decide(
        failed, facts("ok", request_id="req-2", tool_result_ids=("c1",)), config, 1002.0
    )
    assert (Action.HARD_LOCK, FRONTIER) == (retry.action, retry.target.key)


def test_success_resets_failure_count() -> None:
    """A successful answer clears the backend's consecutive failures."""
    config = make_config()
    state: SessionState | None = on_model(
        SMALL, failures=((SMALL, 1),), pending=SMALL, pending_request="req-9"
    )
    state = apply_response(state, ResponseFacts("req-9", 200), config, 1001.0)
    assert state is not None
    assert 0 == state.failures_of(SMALL)


def test_cache_evidence_is_recorded_per_model() -> None:
    """The served prompt becomes the resident prefix; reuse is learned on warm turns only."""
    config = make_config()
    _, state = decide(None, facts("refactor"), config, 100.0)
    cold = ResponseFacts("req-1", 200, prompt_tokens=1000, cached_tokens=0)
    state = apply_response(state, cold, config, 101.0)
    assert state is not None
    assert (FRONTIER, 1000, 0, 101.0, None) == (
        state.evidence_model,
        state.evidence_prompt,
        state.evidence_cached,
        state.evidence_at,
        state.hit_ratio,
    )
    _, state = decide(state, facts("refactor", request_id="req-2"), config, 110.0)
    warm = ResponseFacts("req-2", 200, prompt_tokens=1500, cached_tokens=900)
    state = apply_response(state, warm, config, 111.0)
    assert state is not None
    assert (1500, pytest.approx(0.9)) == (state.evidence_prompt, state.hit_ratio)


def test_response_ids_and_index_entries() -> None:
    """A minted response id is remembered and indexed to the exact backend and affinity key."""
    config = make_config()
    decision, state = decide(None, facts("refactor"), config, 100.0)
    response = ResponseFacts("req-1", 200, response_id="resp-7")
    state = apply_response(state, response, config, 101.0)
    assert state is not None
    assert ("resp-7",) == state.response_ids
    expected = [(response_index_key("resp-7"), BackendPin(FRONTIER, decision.affinity_key))]
    assert expected == index_entries(decision, response)
    assert [] == index_entries(decision, ResponseFacts("req-1", 500, response_id="resp-8"))


def test_no_state_stays_none() -> None:
    """Without memory (fallback) the response path keeps nothing."""
    assert apply_response(None, ResponseFacts("r", 200), make_config(), 1.0) is None


def test_unhealthy_after_repeated_failures() -> None:
    """Two consecutive failures (the default threshold) move the next unlocked turn away."""
    config = make_config(general_refs=EASY_REFS)
    state: SessionState | None = on_model(FRONTIER)
    for i in range(2):
        _, state = decide(state, facts(request_id=f"r{i}"), config, 1000.0 + i)
        state = apply_response(state, ResponseFacts(f"r{i}", 503), config, 1000.5 + i)
    decision, _ = decide(state, facts(request_id="r9"), config, 1003.0)
    assert (Action.SWITCH, Reason.BACKEND_UNHEALTHY) == (decision.action, decision.reason)
