"""The policy matrix and its workload generator, in a CI-sized configuration."""

from __future__ import annotations

import json
from pathlib import Path

from saar.bench.matrix import MatrixOptions, main_matrix, run_matrix
from saar.bench.workloads import WORKLOADS, generate_session, generate_sessions


def test_generator_is_reproducible_and_exactly_sized() -> None:
    """The same coordinates give the same session; every session has the asked turn count."""
    a = generate_session(WORKLOADS[0], 3, 7, 18)
    b = generate_session(WORKLOADS[0], 3, 7, 18)
    assert a == b
    assert 18 == len(a.turns)
    assert {18} == {len(s.turns) for s in generate_sessions(WORKLOADS[1], 1, 5, 18)}


def test_generated_ground_truth_is_consistent() -> None:
    """Tool results answer the previous answer's calls; continuations name the last response."""
    for workload in WORKLOADS:
        for session in generate_sessions(workload, 1, 10, 18):
            previous = None
            for turn in session.turns:
                if previous is not None and turn.tool_result_ids:
                    assert previous.emits_tool_calls == turn.tool_result_ids
                if turn.previous_response_id is not None:
                    assert turn.api == "responses"
                    assert turn.previous_response_id.startswith(f"resp-{session.session_id}-")
                assert turn.prompt_tokens >= turn.request_tokens
                previous = turn


def test_small_matrix_has_no_unsafe_saar_switch_and_writes_results(tmp_path: Path) -> None:
    """saar never switches unsafely; single-turn does; result files are written."""
    doc = main_matrix(True, tmp_path)
    rows = doc["policies"]
    assert 0 == rows["saar"]["unsafe_switches"]
    assert 0 == rows["sticky"]["switches"]
    assert rows["single-turn"]["unsafe_switches"] > 0
    assert rows["saar"]["switches"] < rows["single-turn"]["switches"]
    assert {"single-turn", "sticky", "saar", "no-tool-lock", "no-provider-lock"} <= set(rows)
    for name in ("matrix-small.json", "matrix-small.md", "matrix-small-pareto.svg"):
        assert (tmp_path / name).stat().st_size > 0
    written = json.loads((tmp_path / "matrix-small.json").read_text())
    assert written["policies"]["saar"] == rows["saar"]


def test_matrix_is_deterministic() -> None:
    """Two runs of the same options give the same counters (seeds make runs reproducible)."""
    options = MatrixOptions(seeds=1, sessions=3, turns=8)
    first = run_matrix(options)["policies"]
    second = run_matrix(options)["policies"]
    assert first == second
