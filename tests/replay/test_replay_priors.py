"""Priors builder: grouped by real session key, outcome-based, shrunk, loadable by the policy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from replay_builders import FRONTIER, SMALL, facts, make_config, synthetic

from saar.policy import ModelRef, PriorSource, SessionState, decide
from saar.replay.priors import (
    PriorsFileError,
    build_priors,
    load_priors,
    outcome_of,
    write_priors,
)
from saar.replay.store import SqliteReplayStore


def _records() -> list:
    """30 sessions on SMALL (bad feedback), 30 on FRONTIER (good), 25 that switch and fail."""
    out = []
    t = 10_000.0
    for s in range(30):
        for turn in range(4):
            out.append(synthetic(f"s{s}-{turn}", f"small{s}", t, SMALL, turn=turn, score=0.2))
            out.append(synthetic(f"f{s}-{turn}", f"front{s}", t, FRONTIER, turn=turn, score=0.95))
            t += 1.0
    for s in range(25):
        key = f"switch{s}"
        out.append(synthetic(f"w{s}-0", key, t, SMALL, turn=0))
        out.append(synthetic(f"w{s}-1", key, t + 1, FRONTIER, turn=1, status=500))
        out.append(synthetic(f"w{s}-2", key, t + 2, FRONTIER, turn=2))
        t += 3.0
    return out


def _session_on_small() -> SessionState:
    return SessionState(
        affinity_key="ak",
        committed=SMALL,
        decision="general",
        phase="user_turn",
        turn_count=3,
        last_seen=990.0,
        context_tokens=19_000,
        evidence_model=SMALL,
        evidence_prompt=19_000,
        evidence_cached=17_000,
        evidence_at=990.0,
    )


def test_priors_round_trip_changes_a_decision(tmp_path: Path) -> None:
    """Records → SQLite → build → file → load: a large gap makes a switch that did not happen."""
    store = SqliteReplayStore(tmp_path / "r.db")
    store.write(_records(), [])
    document = build_priors(store.scan(), min_samples=20, open_after_s=0.0)
    store.close()
    path = tmp_path / "priors.json"
    write_priors(document, path)

    # Nearly equal configured qualities: the configured gap (0.01) never pays for a switch.
    config = make_config(
        general_refs=(ModelRef(FRONTIER, quality=0.56), ModelRef(SMALL, quality=0.55))
    )
    before, _ = decide(_session_on_small(), facts(), config, 1000.0)
    assert (before.action.value, before.reason.value) == ("stay", "switch_not_worth_it")

    priors = load_priors(path, config.priors)
    gap = priors.quality_gap[("general", SMALL, FRONTIER)]
    assert gap.source is PriorSource.REPLAY
    assert gap.value > 0.4
    assert priors.quality_gap[("general", FRONTIER, SMALL)].value == pytest.approx(-gap.value)
    after, _ = decide(_session_on_small(), facts(), replace(config, priors=priors), 1000.0)
    assert (after.action.value, after.reason.value) == ("switch", "switch_worth_it")
    assert after.target.key == FRONTIER


def test_handoff_and_remaining_turns_entries() -> None:
    """A failed turn after each switch yields a handoff penalty; session lengths give turns."""
    document = build_priors(_records(), min_samples=20, open_after_s=0.0)
    (handoff,) = document["handoff_penalty"]
    assert (handoff["from"], handoff["to"], handoff["samples"]) == (SMALL, FRONTIER, 25)
    assert handoff["value"] > 0.5
    (turns,) = document["remaining_turns"]
    assert turns["decision"] == "general"
    assert turns["samples"] == 85
    # 60 sessions of 4 turns (mean remaining 1.5) and 25 of 3 (mean 1.0), turn-weighted.
    assert turns["value"] == pytest.approx((60 * 6 + 25 * 3) / (60 * 4 + 25 * 3))
    assert turns["by_depth"]["0"] == pytest.approx((60 * 3 + 25 * 2) / 85, abs=1e-3)


def test_min_samples_rule_and_shrinkage() -> None:
    """Entries below min_samples are left out; a thin gap is shrunk towards 0."""
    records = _records()
    assert build_priors(records, min_samples=10_000)["quality_gap"] == []
    few = [r for r in records if r.replay_id.startswith(("s0-", "f0-"))]
    thin = build_priors(few, min_samples=1, shrinkage=5.0)
    (gap,) = [e for e in thin["quality_gap"] if e["from"] == SMALL]
    assert gap["samples"] == 4
    assert 0 < gap["value"] < 0.95 - 0.2


def test_open_sessions_do_not_count_for_remaining_turns() -> None:
    """A session whose last turn is recent is still running: its length is not known yet."""
    records = [synthetic(f"a{i}", "old", 0.0 + i, SMALL, turn=i) for i in range(3)]
    records += [synthetic(f"b{i}", "live", 10_000.0 + i, SMALL, turn=i) for i in range(2)]
    (turns,) = build_priors(records, min_samples=1, open_after_s=600.0)["remaining_turns"]
    assert turns["samples"] == 1
    assert turns["value"] == pytest.approx(1.0)


def test_outcome_rules() -> None:
    """Feedback wins; failures and retries are 0; plain success is 1; unknown is None."""
    ok = synthetic("a", "k", 1.0, SMALL, turn=2)
    assert outcome_of(ok) == 1.0
    assert outcome_of(synthetic("a", "k", 1.0, SMALL, status=503)) == 0.0
    assert outcome_of(synthetic("a", "k", 1.0, SMALL, status=500, score=0.7)) == 0.7
    assert outcome_of(synthetic("a", "k", 1.0, SMALL, status=None)) is None
    assert outcome_of(ok, synthetic("b", "k", 2.0, SMALL, turn=2)) == 0.0


def test_bad_priors_file_names_the_entry(tmp_path: Path) -> None:
    """A malformed entry is refused with its path."""
    path = tmp_path / "p.json"
    path.write_text('{"version": 1, "handoff_penalty": [{"from": "a", "to": "b", "value": "x"}]}')
    with pytest.raises(PriorsFileError, match=r"handoff_penalty\[0\]\.value"):
        load_priors(path)
