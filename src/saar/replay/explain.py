"""``saar explain``: why one decision went where it went, and what else could have happened.

Theory of operation: the explanation is read from the stored ``DecisionTrace`` (ARCHITECTURE
rule 7: nothing is recomputed for the live answer): the lock or boundary that applied, the
table row of the reason (``saar.policy.reasons``), the base scores and every candidate's switch
terms in utility points (``u``, the policy's one unit).

Counterfactuals (what each mode would have routed, and the base selector alone):

* **from the trace** (always): ``apply`` routes ``proposed``; ``observe`` and ``bypass`` route
  the base choice; the base selector alone is ``base_choice``. A record decided in ``bypass``
  mode never ran the session layer, so its ``apply`` answer needs a re-run.
* **by re-running the pure policy** (with ``--config``): the protected key's recorded history
  is replayed up to this record (``rerun.replay_sequence``) to rebuild the router memory it
  saw, then ``decide`` runs once per mode on the same facts and state. This answers for any
  config, including one that differs from the config in force at the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from saar.policy.config import AdaptationMode, PolicyConfig
from saar.policy.engine import decide
from saar.policy.reasons import REASONS, Reason
from saar.replay.record import ReplayRecord
from saar.replay.rerun import forced_config, replay_sequence
from saar.replay.store import ReplayStore

__all__ = ["explain", "format_explanation", "history_for"]

_LOCK_REASONS = frozenset(
    {
        Reason.TOOL_LOOP.value,
        Reason.TOOL_LOOP_LAST_MODEL.value,
        Reason.TOOL_LOOP_OWNER_UNKNOWN.value,
        Reason.PROVIDER_STATE_PINNED.value,
        Reason.PROVIDER_STATE_LAST_MODEL.value,
        Reason.PROVIDER_STATE_MODEL.value,
        Reason.PROVIDER_STATE_OWNER_UNKNOWN.value,
    }
)


def history_for(
    store: ReplayStore, record: ReplayRecord, limit: int = 10_000
) -> list[ReplayRecord]:
    """The records of ``record``'s protected key up to and including it, oldest first."""
    if record.session_id is None or record.protected_key is None:
        return [record]
    mark = (record.time, record.replay_id)
    rows = [
        r
        for r in store.session(record.session_id, limit=limit)
        if r.protected_key == record.protected_key and (r.time, r.replay_id) <= mark
    ]
    return rows if rows and rows[-1].replay_id == record.replay_id else [*rows, record]


def _meaning(reason: str) -> str:
    try:
        return REASONS[Reason(reason)].when
    except ValueError:
        return "(reason unknown to this build)"


def explain(
    record: ReplayRecord,
    config: PolicyConfig | None = None,
    history: Sequence[ReplayRecord] = (),
) -> dict[str, Any]:
    """Explain one record; with ``config`` (and the key's ``history``) also re-run the policy."""
    d = record.decision
    trace = d.trace
    lock: dict[str, Any] | None = None
    if d.reason in _LOCK_REASONS:
        lock = {
            "reason": d.reason,
            "owner": trace.get("lock_owner"),
            "held": d.action == "hard_lock",
            "meaning": _meaning(d.reason),
            "tool_loop_ids": record.request.tool_loop_ids,
            "provider_state": [r for r, _ in record.request.provider_state],
        }
    boundary: dict[str, Any] | None = None
    if trace.get("idle_reset") or trace.get("decision_drift"):
        boundary = {
            "idle_reset": bool(trace.get("idle_reset")),
            "idle_for_s": trace.get("idle_for"),
            "decision_drift": bool(trace.get("decision_drift")),
        }
    base_choice = str(trace.get("base_choice") or d.base)
    proposed = d.proposed or d.target
    from_trace: dict[str, str | None] = {
        "apply": None if d.mode == "bypass" else proposed,
        "observe": base_choice,
        "bypass": base_choice,
        "base_selector": base_choice,
    }
    result: dict[str, Any] = {
        "replay_id": record.replay_id,
        "decision": d.name,
        "mode": d.mode,
        "scope": d.scope,
        "phase": d.phase,
        "action": d.action,
        "reason": d.reason,
        "verdict": _meaning(d.reason),
        "current": trace.get("current"),
        "base": base_choice,
        "proposed": proposed,
        "routed": d.target,
        "lock": lock,
        "boundary": boundary,
        "session": {
            "turn_count": trace.get("turn_count"),
            "switch_count": trace.get("switch_count"),
            "recent_switches": trace.get("recent_switches"),
            "warmth": trace.get("warmth"),
            "cache_hit_ratio": trace.get("cache_hit_ratio"),
            "cache_evidence": trace.get("cache_evidence"),
            "expected_remaining_turns": trace.get("expected_remaining_turns"),
            "remaining_turns_source": trace.get("remaining_turns_source"),
            "utility_per_currency": trace.get("utility_per_currency"),
        },
        "base_scores": trace.get("base_scores", []),
        "candidates": trace.get("candidates", []),
        "counterfactuals": {"source": "trace", "routes": from_trace},
    }
    if config is not None:
        result["counterfactuals"] = _rerun(record, config, history or [record])
    return result


def _rerun(
    record: ReplayRecord, config: PolicyConfig, history: Sequence[ReplayRecord]
) -> dict[str, Any]:
    # Rebuild the router memory this record saw: replay the key's history up to it.
    seq = (
        [*history[:-1], record]
        if history and history[-1].replay_id == record.replay_id
        else [record]
    )
    state = replay_sequence(seq, config)[-1].state_before
    facts = record.to_facts()
    forced = (
        None
        if record.request.last_user_text is not None
        else forced_config(config, record.decision.name)
    )
    base_cfg = forced if forced is not None else config
    routes: dict[str, str | None] = {}
    actions: dict[str, str] = {}
    spec_name = record.decision.name
    for mode in AdaptationMode:
        try:
            spec = base_cfg.decision(spec_name)
        except KeyError:
            spec = base_cfg.decision(base_cfg.default_decision)
        cfg = replace(
            base_cfg,
            decisions=tuple(
                replace(s, mode=mode) if s.name == spec.name else s for s in base_cfg.decisions
            ),
        )
        decision, _ = decide(state, facts, cfg, record.time)
        routes[mode.value] = decision.target.key
        actions[mode.value] = f"{decision.action.value}/{decision.reason.value}"
        if mode is AdaptationMode.BYPASS:
            routes["base_selector"] = decision.base.key
    return {
        "source": "rerun",
        "history_records": len(history),
        "routes": routes,
        "actions": actions,
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:+.4f}"
    return "-" if value is None else str(value)


def format_explanation(data: dict[str, Any]) -> str:
    """Human-readable explanation."""
    lines = [
        f"replay {data['replay_id']}: decision {data['decision']!r} "
        f"(mode {data['mode']}, scope {data['scope']}, phase {data['phase']})",
        f"verdict: {data['action']} / {data['reason']}: {data['verdict']}",
        f"  current {data['current'] or '-'}  base {data['base']}  "
        f"proposed {data['proposed']}  routed {data['routed']}",
    ]
    lock = data.get("lock")
    if lock:
        state = "held" if lock["held"] else "could not be held"
        lines.append(
            f"lock: {lock['reason']} {state}, owner {lock['owner'] or 'unknown'} "
            f"(tool-loop ids {lock['tool_loop_ids']}, provider state "
            f"{','.join(lock['provider_state']) or '-'})"
        )
        lines.append(f"  {lock['meaning']}")
        lines.append("  a hard lock is not priced: no economics can override it")
    boundary = data.get("boundary")
    if boundary:
        parts = []
        if boundary["idle_reset"]:
            parts.append(f"idle reset after {_fmt(boundary['idle_for_s'])} s")
        if boundary["decision_drift"]:
            parts.append("decision drift")
        lines.append("boundary: " + ", ".join(parts))
    s = data["session"]
    lines.append(
        f"session: {s['turn_count']} turns, {s['switch_count']} switches "
        f"(recent {s['recent_switches']}), warmth {s['warmth']}, hit ratio "
        f"{s['cache_hit_ratio']} (evidence {s['cache_evidence']}), expected remaining turns "
        f"{s['expected_remaining_turns']} ({s['remaining_turns_source'] or '-'})"
    )
    if data["base_scores"]:
        lines.append("base scores (quality, expected cost, score):")
        for b in data["base_scores"]:
            lines.append(
                f"  {b['physical']:<28} q={b['quality']:.3f} cost={b['expected_cost']:.6f} "
                f"score={b['score']:+.4f}"
            )
    if data["candidates"]:
        lines.append(
            "switch terms vs the current model, in utility points u (net > 0 favours switching):"
        )
        names = (
            "quality_gain",
            "turn_cost_delta",
            "future_cost_delta",
            "checkout",
            "handoff",
            "history",
            "continuity",
            "stay_bias",
            "net",
        )
        lines.append(f"  {'candidate':<28}" + "".join(f"{n[:10]:>11}" for n in names))
        for c in data["candidates"]:
            lines.append(f"  {c['physical']:<28}" + "".join(f"{c[n]:>+11.4f}" for n in names))
    cf = data["counterfactuals"]
    lines.append(f"what would have happened ({cf['source']}):")
    for mode, target in cf["routes"].items():
        extra = f"  [{cf['actions'][mode]}]" if "actions" in cf and mode in cf["actions"] else ""
        lines.append(f"  {mode:<14} -> {target or 'unknown (re-run with --config)'}{extra}")
    return "\n".join(lines)
