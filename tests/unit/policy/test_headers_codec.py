"""Header values and their grammar; the session codec; the reason table."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from policy_builders import FRONTIER, facts, make_config, on_model

from saar.policy import (
    ACTIONS,
    REASONS,
    Action,
    Reason,
    SessionCodecError,
    SessionState,
    decide,
    parse_methods,
    parse_pairs,
    response_headers,
)
from saar.policy.headers import HeaderGrammarError, escape_value, unescape_value
from saar.policy.reasons import check_pair


def test_headers_for_a_tool_lock() -> None:
    """A tool-locked turn emits the documented header set and values."""
    state = on_model(FRONTIER, open_calls=(("c1", FRONTIER),))
    decision, _ = decide(state, facts("ok", tool_result_ids=("c1",)), make_config(), 1000.0)
    headers = dict(response_headers(decision))
    assert {
        "x-vsr-selected-model": "frontier-400b",
        "x-vsr-selected-pool": "h100",
        "x-vsr-selected-decision": "general",
        "x-vsr-session-phase": "tool_loop",
        "x-vsr-replay-id": "req-1",
        "x-vsr-learning-methods": "session_aware",
        "x-vsr-learning-actions": "session_aware=hard_lock",
        "x-vsr-learning-scopes": "session_aware=conversation",
        "x-vsr-learning-reasons": "session_aware=hard_lock=tool_loop",
        "x-vsr-learning-modes": "session_aware=apply",
    } == headers


def test_reasons_header_parses_on_first_equals() -> None:
    """The reasons value splits on the first '=' into method and ``action=reason``."""
    assert (("session_aware", "hard_lock=tool_loop"),) == parse_pairs(
        "session_aware=hard_lock=tool_loop"
    )


@pytest.mark.parametrize("bad", ["", "session_aware", "=x", "a b=c", "m=x;y"])
def test_malformed_pairs_are_rejected(bad: str) -> None:
    """Values that break the grammar raise HeaderGrammarError."""
    with pytest.raises(HeaderGrammarError):
        parse_pairs(bad)


def test_methods_value_parses() -> None:
    """The methods header is a comma list of method names."""
    assert ("session_aware",) == parse_methods("session_aware")
    with pytest.raises(HeaderGrammarError):
        parse_methods("session aware")


@given(st.text())
def test_escape_round_trips(value: str) -> None:
    """unescape(escape(v)) == v and the escaped form has no separator characters."""
    escaped = escape_value(value)
    assert value == unescape_value(escaped)
    assert not any(ch in escaped for ch in ",;\r\n")


@given(st.text(min_size=1))
def test_pairs_round_trip_any_value(value: str) -> None:
    """Any value written as a pair parses back to itself."""
    assert (("session_aware", value),) == parse_pairs(f"session_aware={escape_value(value)}")


def test_every_reason_belongs_to_one_action() -> None:
    """The table covers every enum member and each reason names a real action."""
    assert set(Action) == set(ACTIONS)
    assert set(Reason) == set(REASONS)
    assert all(REASONS[r].action in ACTIONS for r in Reason)


def test_impossible_pair_is_refused() -> None:
    """check_pair refuses a reason of another action."""
    with pytest.raises(ValueError, match="belongs to action"):
        check_pair(Action.STAY, Reason.SWITCH_WORTH_IT)


def test_codec_round_trip_full_state() -> None:
    """A fully populated state encodes compactly and decodes to an equal value."""
    state = on_model(
        FRONTIER,
        pending="x@y",
        pending_request="r",
        pending_affinity="ak-2",
        switch_count=2,
        switch_times=(1.0, 2.5),
        open_calls=(("c1", FRONTIER),),
        response_ids=("resp-1",),
        replay_id="r0",
        failures=((FRONTIER, 1),),
        hit_ratio=0.25,
    )
    data = state.encode()
    assert state == SessionState.decode(data)
    assert 1 == json.loads(data)["v"]


def test_codec_refuses_unknown_version() -> None:
    """A record from a future version raises a clear SessionCodecError."""
    with pytest.raises(SessionCodecError, match="version 2"):
        SessionState.decode(b'{"v":2,"ak":"x"}')


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"v":1}', b'{"v":1,"ak":"x","tc":"3"}'])
def test_codec_refuses_malformed_records(data: bytes) -> None:
    """Corrupt records raise SessionCodecError rather than a random exception."""
    with pytest.raises(SessionCodecError):
        SessionState.decode(data)
