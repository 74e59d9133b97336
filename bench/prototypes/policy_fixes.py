"""Scratch prototype of two policy fixes, measured on the matrix. NOT the shipped policy.

The lead owns ``src/saar/policy``; this script only monkeypatches it in its own process to
show what two weaknesses found by the matrix cost (see bench/README.md, "Policy weaknesses"):

A. ``carryover``: an unsignalled turn keeps the session's decision only when it continues
   something (tool results, ``previous_response_id``, a short follow-up of <= 4 words). A
   substantive user message that matches no decision falls to ``default_decision`` (and so
   counts as drift), instead of keeping e.g. ``reasoning`` for the rest of the session.
B. ``no-drift-continuity``: at a decision-drift boundary the economics drop the
   ``continuity`` term (the expected re-prefill of coming back to the current model), which
   otherwise makes a warm frontier almost impossible to leave after the topic changed.

Run: ``.venv/bin/python bench/prototypes/policy_fixes.py [--small]``; writes
``bench/results/prototype-policy-fixes.{json,md}``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from saar.bench import matrix
from saar.policy import engine
from saar.policy.selector import signal_match
from saar.policy.switching import Economics

_ORIGINAL_DECISION_FOR = engine._decision_for
_ORIGINAL_EVALUATE = engine.evaluate


def _carryover(state: Any, facts: Any, config: Any, now: float = 0.0) -> Any:
    matched = signal_match(facts, config)
    if matched is not None:
        return matched, "signals"
    continues = (
        facts.in_tool_loop
        or facts.previous_response_id is not None
        or len(facts.last_user_text.split()) <= 4
    )
    if state is not None and state.decision and continues:
        for spec in config.decisions:
            if spec.name == state.decision:
                return spec, "session"
    return config.decision(config.default_decision), "default"


def _no_drift_continuity(**kwargs: Any) -> Economics:
    econ = _ORIGINAL_EVALUATE(**kwargs)
    if not kwargs["reset"]:
        return econ
    terms = tuple(replace(t, net=t.net - t.continuity, continuity=0.0) for t in econ.terms)
    best, best_net = None, float("-inf")
    by_key = {c.key: c for c in kwargs["candidates"]}
    for t in terms:
        if t.net > best_net:
            best, best_net = by_key[t.physical], t.net
    return Economics(terms, best, best_net)


def run(small: bool) -> dict[str, Any]:
    options = matrix.MatrixOptions.small() if small else matrix.MatrixOptions()
    out: dict[str, Any] = {}
    variants = {
        "shipped": (False, False),
        "A carryover": (True, False),
        "B no-drift-continuity": (False, True),
        "A+B": (True, True),
    }
    for label, (a, b) in variants.items():
        engine._decision_for = _carryover if a else _ORIGINAL_DECISION_FOR
        engine.evaluate = _no_drift_continuity if b else _ORIGINAL_EVALUATE  # type: ignore[assignment]
        doc = matrix.run_world(options, "quality-weighted")
        out[label] = {k: doc["policies"][k] for k in ("single-turn", "saar")}
    engine._decision_for = _ORIGINAL_DECISION_FOR
    engine.evaluate = _ORIGINAL_EVALUATE
    return out


def markdown(out: dict[str, Any]) -> str:
    lines = [
        "# Prototype policy fixes (scratch monkeypatch, not the shipped policy)",
        "",
        "| Variant | Policy | Switches | Unsafe | Cost red. (shared) | Cost red. (upstream conv.)"
        " | Quality delta | Demand quality | Frontier share |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in out.items():
        for name, r in rows.items():
            if name == "single-turn" and label != "shipped":
                continue
            lines.append(
                f"| {label} | {name} | {r['switches']:,} | {r['unsafe_switches']} | "
                f"{100 * r['cost_reduction']:.2f}% | {100 * r['cost_reduction_upstream']:.2f}% | "
                f"{r['quality_delta']:+.4f} | {r['demand_quality']:.4f} | "
                f"{100 * r['tier_share'].get('frontier-r1', 0):.1f}% |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    small = "--small" in sys.argv
    result = run(small)
    results = Path(__file__).resolve().parents[1] / "results"
    stem = "prototype-policy-fixes" + ("-small" if small else "")
    (results / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
