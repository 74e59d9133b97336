"""Hypothesis properties: locks never switch, decide is deterministic, codec round-trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_builders import MODELS, facts, make_config

from saar.policy import (
    Action,
    AdaptationMode,
    BackendPin,
    Pin,
    ProviderState,
    SessionAwareKnobs,
    SessionState,
    decide,
    parse_pairs,
    response_headers,
)

PHYSICAL = st.sampled_from(sorted(MODELS))
TEXT = st.sampled_from(["hello", "refactor this", "debug the traceback", "continue", "fix it"])
KNOBS = st.builds(
    SessionAwareKnobs,
    stay_bias=st.floats(0, 2),
    quality_gap_multiplier=st.floats(0, 5),
    handoff_penalty_weight=st.floats(0, 5),
    remaining_turn_weight=st.floats(0, 1),
    prefix_cache_weight=st.floats(0, 5),
    switch_history_weight=st.floats(0, 5),
    min_turns_before_switch=st.integers(0, 4),
    idle_timeout_seconds=st.floats(0, 1000),
)


@st.composite
def states(draw: st.DrawFn) -> SessionState:
    """Arbitrary but well-formed router memory."""
    committed = draw(st.one_of(st.none(), PHYSICAL))
    prompt = draw(st.integers(0, 200_000))
    return SessionState(
        affinity_key="ak-" + draw(st.text("abc", min_size=1, max_size=4)),
        committed=committed,
        pending=draw(st.one_of(st.none(), PHYSICAL)),
        pending_request=draw(st.one_of(st.none(), st.just("r0"))),
        decision=draw(st.sampled_from(["", "general", "coding"])),
        turn_count=draw(st.integers(0, 50)),
        switch_count=draw(st.integers(0, 10)),
        switch_times=tuple(draw(st.lists(st.floats(0, 1000), max_size=8))),
        last_seen=draw(st.floats(0, 1000)),
        context_tokens=draw(st.integers(0, 200_000)),
        evidence_model=draw(st.one_of(st.none(), PHYSICAL)),
        evidence_prompt=prompt,
        evidence_cached=draw(st.integers(0, prompt)),
        evidence_at=draw(st.floats(0, 1000)),
        hit_ratio=draw(st.one_of(st.none(), st.floats(0, 1))),
        open_calls=tuple(
            draw(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]), PHYSICAL), max_size=3))
        ),
        response_ids=tuple(draw(st.lists(st.text(max_size=5), max_size=3))),
        failures=tuple(draw(st.lists(st.tuples(PHYSICAL, st.integers(0, 5)), max_size=2))),
    )


@settings(max_examples=200, deadline=None)
@given(states(), TEXT, KNOBS, st.integers(0, 300_000), st.floats(1000, 100_000))
def test_open_tool_loop_never_switches(
    state: SessionState, text: str, knobs: SessionAwareKnobs, tokens: int, now: float
) -> None:
    """A tool result whose call memory recorded always goes to the call's owner."""
    call_id, owner = "c-owned", next(iter(sorted(MODELS)))
    state = SessionState(
        **{**{f: getattr(state, f) for f in state.__slots__}, "open_calls": ((call_id, owner),)}
    )
    decision, _ = decide(
        state,
        facts(text, tool_result_ids=(call_id,), context_tokens=tokens),
        make_config(knobs=knobs),
        now,
    )
    assert (Action.HARD_LOCK, owner) == (decision.action, decision.target.key)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), states()), TEXT, KNOBS, PHYSICAL, st.floats(1000, 100_000))
def test_backend_pin_never_switches(
    state: SessionState | None, text: str, knobs: SessionAwareKnobs, pinned: str, now: float
) -> None:
    """A resolved response pin routes to exactly that backend and affinity key."""
    request = facts(
        text,
        provider_state=(ProviderState("previous_response_id", Pin.BACKEND),),
        previous_response_id="resp",
        response_pin=BackendPin(pinned, "ak-pin"),
    )
    decision, _ = decide(state, request, make_config(knobs=knobs), now)
    assert (pinned, "ak-pin") == (decision.target.key, decision.affinity_key)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), states()),
    TEXT,
    KNOBS,
    st.integers(0, 300_000),
    st.floats(0, 100_000),
    st.sampled_from(list(AdaptationMode)),
    st.lists(st.sampled_from(["c1", "c2", "c9"]), max_size=2),
)
def test_decide_is_deterministic_and_headers_parse(
    state: SessionState | None,
    text: str,
    knobs: SessionAwareKnobs,
    tokens: int,
    now: float,
    mode: AdaptationMode,
    results: list[str],
) -> None:
    """Same inputs give equal outputs; every pair header parses back with the grammar."""
    config = make_config(knobs=knobs, mode=mode)
    request = facts(text, context_tokens=tokens, tool_result_ids=tuple(results))
    first = decide(state, request, config, now)
    second = decide(state, request, config, now)
    assert first == second
    decision = first[0]
    headers = dict(response_headers(decision))
    assert (("session_aware", decision.action.value),) == parse_pairs(
        headers["x-vsr-learning-actions"]
    )
    assert (("session_aware", f"{decision.action.value}={decision.reason.value}"),) == parse_pairs(
        headers["x-vsr-learning-reasons"]
    )
    assert (("session_aware", decision.mode.value),) == parse_pairs(headers["x-vsr-learning-modes"])
    assert (("session_aware", decision.scope.value),) == parse_pairs(
        headers["x-vsr-learning-scopes"]
    )


@settings(max_examples=200, deadline=None)
@given(states())
def test_codec_round_trips(state: SessionState) -> None:
    """decode(encode(s)) == s for any well-formed state."""
    assert state == SessionState.decode(state.encode())


@settings(max_examples=200, deadline=None)
@given(states(), TEXT, KNOBS, PHYSICAL, st.floats(1000, 100_000), st.sampled_from(["r", "r-new"]))
def test_backend_state_without_pin_keeps_the_last_model(
    state: SessionState,
    text: str,
    knobs: SessionAwareKnobs,
    committed: str,
    now: float,
    previous: str,
) -> None:
    """Backend-pinned state not in the index stays on the session's last model and affinity
    key: the pending turn's (it may have minted the response, not learned yet), unless the id
    was already learned; else the committed model (locks.py)."""
    state = SessionState(
        **{**{f: getattr(state, f) for f in state.__slots__}, "committed": committed}
    )
    request = facts(
        text,
        provider_state=(ProviderState("previous_response_id", Pin.BACKEND),),
        previous_response_id=previous,
    )
    decision, _ = decide(state, request, make_config(knobs=knobs), now)
    pending = state.pending is not None and previous not in state.response_ids
    expected = state.pending if pending else committed
    assert (Action.HARD_LOCK, expected, state.affinity_key) == (
        decision.action,
        decision.target.key,
        decision.affinity_key,
    )
