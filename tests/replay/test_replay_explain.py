"""explain: names the lock or boundary, lists score terms, gives mode counterfactuals."""

from __future__ import annotations

from dataclasses import replace

from replay_builders import FRONTIER, SMALL, Run, make_config

from saar.policy import AdaptationMode, SessionAwareKnobs
from saar.replay.explain import explain, format_explanation


def _tool_loop_run() -> Run:
    run = Run(make_config())
    run.turn(tool_calls=("call_a",))
    run.turn(tool_result_ids=("call_a",), has_tools=True)
    return run


def test_explain_names_the_tool_loop_lock() -> None:
    """A tool-result turn decided by the real policy is explained as a held tool_loop lock."""
    run = _tool_loop_run()
    record = run.records[1]
    assert (record.decision.action, record.decision.reason) == ("hard_lock", "tool_loop")
    data = explain(record)
    assert data["lock"]["reason"] == "tool_loop"
    assert data["lock"]["owner"] == SMALL
    assert data["lock"]["held"] is True
    assert data["lock"]["tool_loop_ids"] == 1
    text = format_explanation(data)
    assert "lock: tool_loop held, owner small-8b@mi300" in text
    assert "no economics can override it" in text


def test_counterfactuals_from_the_trace() -> None:
    """Without a config, apply routes the proposal and observe/bypass the base choice."""
    knobs = SessionAwareKnobs(decision_drift_reset=False)
    run = Run(make_config(knobs=knobs, mode=AdaptationMode.OBSERVE))
    run.turn(text="hello")
    record = run.turn(text="refactor this")
    assert record.decision.mode == "observe"
    routes = explain(record)["counterfactuals"]["routes"]
    assert routes["base_selector"] == FRONTIER
    assert routes["observe"] == routes["bypass"] == FRONTIER
    assert routes["apply"] == record.decision.proposed


def test_counterfactuals_by_rerun_rebuild_session_state() -> None:
    """With a config, the key's history is replayed so each mode is decided on real memory."""
    run = _tool_loop_run()
    data = explain(run.records[1], run.config, run.records)
    cf = data["counterfactuals"]
    assert cf["source"] == "rerun"
    assert cf["actions"]["apply"] == "hard_lock/tool_loop"
    assert cf["actions"]["observe"] == "hard_lock/tool_loop"
    assert cf["actions"]["bypass"] == "bypass/decision_bypass"
    assert cf["routes"]["apply"] == SMALL


def test_explain_lists_candidate_terms_in_utility_points() -> None:
    """A priced turn lists every candidate's terms, and they add up to net."""
    knobs = SessionAwareKnobs(decision_drift_reset=False)
    run = Run(make_config(knobs=knobs))
    run.turn(text="hello")
    record = run.turn(text="refactor this")
    data = explain(record)
    assert data["action"] == "switch"
    (cand,) = [c for c in data["candidates"] if c["physical"] == FRONTIER]
    parts = (
        "quality_gain",
        "turn_cost_delta",
        "future_cost_delta",
        "checkout",
        "handoff",
        "history",
        "continuity",
        "stay_bias",
    )
    assert abs(sum(cand[p] for p in parts) - cand["net"]) < 1e-9
    assert cand["net"] > 0
    assert "utility points" in format_explanation(data)


def test_boundary_is_named_after_idle() -> None:
    """An idle gap past the timeout is reported as the idle boundary."""
    knobs = replace(SessionAwareKnobs(), idle_timeout_seconds=60.0)
    run = Run(make_config(knobs=knobs))
    run.turn()
    record = run.turn(gap=600.0)
    data = explain(record)
    assert data["boundary"]["idle_reset"] is True
    assert "idle reset after" in format_explanation(data)
