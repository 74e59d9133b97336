"""Re-evaluation: the pure policy over recorded traffic under a new config."""

from __future__ import annotations

from dataclasses import replace

from replay_builders import FRONTIER, SMALL, Run, make_config

from saar.policy import SessionAwareKnobs
from saar.replay.rerun import rerun

KNOBS = SessionAwareKnobs(decision_drift_reset=False)


def _recorded(capture: bool = False) -> Run:
    """general → SMALL, then three coding turns: switch to FRONTIER, then stay."""
    run = Run(make_config(knobs=KNOBS), capture_prompts=capture)
    for text in ("hello", "refactor a", "refactor b", "refactor c"):
        run.turn(text=text)
    return run


def test_same_config_changes_nothing() -> None:
    """Re-running under the recorded config reproduces every decision."""
    run = _recorded()
    report = rerun(run.records, run.config)
    assert report.records == 4
    assert report.changed == 0
    assert (report.switches_before, report.switches_after) == (1, 1)


def test_min_turns_change_moves_switches() -> None:
    """min_turns_before_switch 1 → 5 turns the switch into stays on the first model."""
    run = _recorded()
    assert [r.decision.target for r in run.records] == [SMALL, FRONTIER, FRONTIER, FRONTIER]
    new = make_config(knobs=replace(KNOBS, min_turns_before_switch=5))
    report = rerun(run.records, new)
    assert report.changed == 3
    assert (report.switches_before, report.switches_after) == (1, 0)
    assert report.actions_after["stay"] == 3
    assert report.cost_after < report.cost_before
    assert report.transitions[f"switch/switch_worth_it {FRONTIER} -> stay/min_turns {SMALL}"] == 1
    data = report.to_dict()
    assert data["changed"] == 3
    assert data["switches"] == {"before": 1, "after": 0}
    assert "would route differently" in report.format_table()


def test_price_change_moves_estimated_cost() -> None:
    """A higher frontier price raises the estimated cost of the same routing."""
    run = _recorded()
    pricier = make_config(knobs=KNOBS, frontier_prompt=6.0)
    report = rerun(run.records, pricier, baseline=run.config)
    assert report.changed == 0
    assert report.cost_after > report.cost_before


def test_hard_locks_are_counted() -> None:
    """Tool-loop turns are re-decided as hard locks; disabling the lock removes them."""
    run = Run(make_config())
    run.turn(tool_calls=("c1",))
    run.turn(tool_result_ids=("c1",), has_tools=True)
    same = rerun(run.records, run.config)
    assert (same.hard_locks_before, same.hard_locks_after) == (1, 1)
    unlocked = make_config(knobs=replace(SessionAwareKnobs(), tool_loop_hard_lock=False))
    report = rerun(run.records, unlocked)
    assert report.hard_locks_after == 0


def test_captured_prompts_are_rematched() -> None:
    """With captured prompts, the new config's signals re-match the decision."""
    run = _recorded(capture=True)
    new = make_config(knobs=KNOBS)
    coding = replace(new.decision("coding"), signals=())  # coding no longer matches anything
    new = replace(new, decisions=(coding, new.decision("general")))
    report = rerun(run.records, new)
    assert report.rematched == 4
    assert report.changed == 3
    without = rerun(run.records, new, rematch=False)
    assert without.changed == 0
