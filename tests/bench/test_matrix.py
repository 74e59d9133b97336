"""The policy matrix and its workload generator, in a CI-sized configuration."""

from __future__ import annotations

import json
from pathlib import Path

from saar.bench.configs import MATRIX_CONFIG, PRIMARY_WORLD, WORLDS, matrix_policy, world_config
from saar.bench.matrix import MatrixOptions, main_matrix, run_matrix
from saar.bench.workloads import WORKLOADS, generate_session, generate_sessions
from saar.policy.config import HybridWeights


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


def test_worlds_differ_only_in_base_selector_weights() -> None:
    """The primary world is the matrix config; "defaults" drops every hybrid weight override."""
    assert PRIMARY_WORLD in WORLDS
    assert {"quality-weighted", "defaults"} == set(WORLDS)
    assert MATRIX_CONFIG == world_config(PRIMARY_WORLD)
    defaults = world_config("defaults")
    assert all("hybrid" not in d["algorithm"] for d in defaults["routing"]["decisions"])
    library = matrix_policy(defaults)
    primary = matrix_policy(world_config(PRIMARY_WORLD))
    reasoning = {d.name: d for d in primary.decisions}["reasoning"]
    assert 0.2 == reasoning.hybrid.cost_weight
    assert {HybridWeights()} == {d.hybrid for d in library.decisions}


def test_small_matrix_has_no_unsafe_saar_switch_and_writes_results(tmp_path: Path) -> None:
    """In every world saar never switches unsafely; single-turn does; result files are written."""
    doc = main_matrix(True, tmp_path)
    assert set(WORLDS) == set(doc["worlds"])
    written = json.loads((tmp_path / "matrix-small.json").read_text())
    md = (tmp_path / "matrix-small.md").read_text()
    for name, world in doc["worlds"].items():
        rows = world["policies"]
        assert 0 == rows["saar"]["unsafe_switches"]
        assert 0 == rows["sticky"]["switches"]
        assert rows["single-turn"]["unsafe_switches"] > 0
        assert rows["saar"]["switches"] < rows["single-turn"]["switches"]
        assert {"single-turn", "sticky", "saar", "no-tool-lock", "no-provider-lock"} <= set(rows)
        assert {"oracle: meets demand", "cheapest safe: all small"} <= set(world["references"])
        assert {"checks", "pareto_better_upstream_convention"} <= set(world["target"])
        assert written["worlds"][name]["policies"]["saar"] == rows["saar"]
        assert f"## World: {name}" in md
        assert f"Target ({name}: saar vs the published Full SAAR row)" in md
    assert {"defaults single-turn", "defaults saar"} == set(doc["cross_world"])
    assert "not a verdict" in md
    for name in (
        "matrix-small.json",
        "matrix-small.md",
        "matrix-small-pareto.svg",
        "matrix-small-defaults-pareto.svg",
    ):
        assert (tmp_path / name).stat().st_size > 0


def test_matrix_is_deterministic() -> None:
    """Two runs of the same options give the same counters (seeds make runs reproducible)."""
    options = MatrixOptions(seeds=1, sessions=3, turns=8)
    first = run_matrix(options)["worlds"]
    second = run_matrix(options)["worlds"]
    assert [w["policies"] for w in first.values()] == [w["policies"] for w in second.values()]
