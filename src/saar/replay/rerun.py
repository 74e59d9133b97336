"""Offline re-evaluation: re-run the pure policy over recorded traffic under another config.

Theory of operation: ``policy.decide`` is pure, so the same function that routed live traffic
can route the recorded traffic again. Records are grouped by the protected key the *new*
config computes (a scope change regroups them) and replayed in time order; the router memory
is threaded through ``decide`` and then ``apply_response`` with the recorded response
(status, tool calls, response id, usage), at the recorded times.

Decision matching: without captured prompts the record has no text, so each record is
re-decided under its **recorded** decision (a copy of the new config in which that decision is
the only one). With ``capture_prompts`` the new config's signals match the captured text and
headers again. A recorded decision that the new config no longer has is matched on facts.

Counterfactual responses: when the re-run routes a request where it was routed before, the
recorded usage is replayed as is. When it routes elsewhere, the recorded status and tool calls
are kept (a model that answered with tool calls is assumed to do the same elsewhere) but the
cache evidence is dropped (another model's cached tokens say nothing about this one).

Cost: ``(prompt - cached) * prompt price + cached * cached price + completion * completion
price`` of the new config (``--baseline-config`` prices the recorded routing with old prices).
For a changed target the cached tokens are estimated from the re-run trace's warmth (0 after a
switch or on a fresh session).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from saar.policy.config import PolicyConfig
from saar.policy.decision import Decision
from saar.policy.engine import apply_response, decide, protected_key
from saar.policy.facts import ResponseFacts
from saar.policy.session import SessionState
from saar.replay.record import ReplayRecord

__all__ = [
    "Replayed",
    "RerunReport",
    "forced_config",
    "replay_sequence",
    "rerun",
]


@dataclass(frozen=True, slots=True)
class Replayed:
    """One record re-decided under a config."""

    record: ReplayRecord
    decision: Decision
    state_before: SessionState | None
    config: PolicyConfig
    """The config it was decided under (the forced-decision copy, when matching was forced)."""
    rematched: bool
    """True when the decision was matched on captured text rather than taken from the record."""

    @property
    def changed(self) -> bool:
        """True when the re-run routes to a different physical model."""
        return self.decision.target.key != self.record.decision.target


def forced_config(config: PolicyConfig, name: str) -> PolicyConfig | None:
    """A copy of ``config`` whose only decision is ``name`` (``None`` if it has none such)."""
    try:
        spec = config.decision(name)
    except KeyError:
        return None
    return replace(config, decisions=(replace(spec, signals=()),), default_decision=name)


def _response(record: ReplayRecord, decision: Decision) -> ResponseFacts | None:
    facts = record.to_response_facts()
    if facts is None:
        return None
    # ``physical=None``: the response belongs to whatever the re-run routed (the pending model).
    facts = replace(facts, physical=None)
    if decision.target.key != record.decision.target:
        facts = replace(facts, cached_tokens=None, prompt_tokens=None)
    return facts


def replay_sequence(
    records: Sequence[ReplayRecord],
    config: PolicyConfig,
    *,
    state: SessionState | None = None,
    rematch: bool = True,
) -> list[Replayed]:
    """Re-decide ``records`` (one protected key, time order), threading router memory."""
    out: list[Replayed] = []
    forced: dict[str, PolicyConfig | None] = {}
    for record in records:
        facts = record.to_facts()
        captured = rematch and record.request.last_user_text is not None
        cfg: PolicyConfig | None = None
        if not captured:
            name = record.decision.name
            if name not in forced:
                forced[name] = forced_config(config, name)
            cfg = forced[name]
        used = cfg if cfg is not None else config
        decision, new_state = decide(state, facts, used, record.time)
        out.append(Replayed(record, decision, state, used, cfg is None))
        state = new_state
        response = _response(record, decision)
        if response is not None and state is not None:
            resp = record.response
            at = resp.at if resp is not None and resp.at is not None else record.time
            state = apply_response(state, response, used, at)
    return out


def _cost(
    config: PolicyConfig, target: str, prompt: int, cached: int, completion: int
) -> float | None:
    physical = config.physical_models.get(target)
    if physical is None:
        return None
    p = physical.pricing
    cached = min(max(cached, 0), max(prompt, 0))
    return (
        (prompt - cached) * p.prompt_per_1m
        + cached * p.cached_prompt_per_1m
        + completion * p.completion_per_1m
    ) / 1e6


@dataclass(slots=True)
class RerunReport:
    """What would move under the new config."""

    records: int = 0
    keys: int = 0
    changed: int = 0
    rematched: int = 0
    switches_before: int = 0
    switches_after: int = 0
    hard_locks_before: int = 0
    hard_locks_after: int = 0
    cost_before: float = 0.0
    cost_after: float = 0.0
    unpriced: int = 0
    actions_before: Counter[str] = field(default_factory=Counter)
    actions_after: Counter[str] = field(default_factory=Counter)
    transitions: Counter[str] = field(default_factory=Counter)
    """``old action/reason -> new action/reason`` for the changed decisions."""
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "records": self.records,
            "keys": self.keys,
            "changed": self.changed,
            "rematched": self.rematched,
            "switches": {"before": self.switches_before, "after": self.switches_after},
            "hard_locks": {"before": self.hard_locks_before, "after": self.hard_locks_after},
            "cost": {
                "before": round(self.cost_before, 6),
                "after": round(self.cost_after, 6),
                "delta": round(self.cost_after - self.cost_before, 6),
                "unpriced_records": self.unpriced,
            },
            "actions": {
                "before": dict(sorted(self.actions_before.items())),
                "after": dict(sorted(self.actions_after.items())),
            },
            "transitions": dict(self.transitions.most_common()),
            "examples": self.examples,
        }

    def format_table(self) -> str:
        """A readable summary table."""

        def row(name: str, before: object, after: object, delta: str = "") -> str:
            return f"{name:<24} {before!s:>14} {after!s:>14} {delta:>14}"

        lines = [
            f"re-evaluated {self.records} decisions over {self.keys} protected keys; "
            f"{self.changed} would route differently "
            f"({self.rematched} re-matched on captured prompts)",
            "",
            row("", "recorded", "re-run", "delta"),
            row(
                "switches",
                self.switches_before,
                self.switches_after,
                f"{self.switches_after - self.switches_before:+d}",
            ),
            row(
                "hard locks",
                self.hard_locks_before,
                self.hard_locks_after,
                f"{self.hard_locks_after - self.hard_locks_before:+d}",
            ),
            row(
                "est. cost",
                f"{self.cost_before:.4f}",
                f"{self.cost_after:.4f}",
                f"{self.cost_after - self.cost_before:+.4f}",
            ),
        ]
        for action in sorted(set(self.actions_before) | set(self.actions_after)):
            before, after = self.actions_before[action], self.actions_after[action]
            lines.append(row(f"action {action}", before, after, f"{after - before:+d}"))
        if self.unpriced:
            lines.append(f"({self.unpriced} records not priced: model not in the config)")
        if self.transitions:
            lines += ["", "changed decisions (recorded -> re-run):"]
            lines += [f"  {n:>6}  {t}" for t, n in self.transitions.most_common(20)]
        return "\n".join(lines)


def rerun(
    records: Iterable[ReplayRecord],
    config: PolicyConfig,
    *,
    baseline: PolicyConfig | None = None,
    rematch: bool = True,
    max_examples: int = 20,
) -> RerunReport:
    """Re-run the policy under ``config`` over ``records`` and report what would move."""
    prices_before = baseline if baseline is not None else config
    groups: dict[str, list[ReplayRecord]] = {}
    loose: list[ReplayRecord] = []
    for record in records:
        key = protected_key(record.to_facts(), config)
        if key is None:
            loose.append(record)
        else:
            groups.setdefault(key, []).append(record)
    report = RerunReport(keys=len(groups))
    sequences = [sorted(g, key=lambda r: (r.time, r.replay_id)) for g in groups.values()]
    sequences += [[r] for r in loose]
    for seq in sequences:
        for item in replay_sequence(seq, config, rematch=rematch):
            _account(report, item, prices_before, config, max_examples)
    return report


def _account(
    report: RerunReport,
    item: Replayed,
    prices_before: PolicyConfig,
    config: PolicyConfig,
    max_examples: int,
) -> None:
    record, new = item.record, item.decision
    old = record.decision
    report.records += 1
    report.rematched += item.rematched and record.request.last_user_text is not None
    report.actions_before[old.action] += 1
    report.actions_after[new.action.value] += 1
    report.switches_before += old.switched
    report.switches_after += new.switched
    report.hard_locks_before += old.action == "hard_lock"
    report.hard_locks_after += new.action.value == "hard_lock"
    resp = record.response
    prompt = (
        resp.prompt_tokens
        if resp is not None and resp.prompt_tokens is not None
        else record.request.context_tokens
    )
    completion = resp.completion_tokens if resp is not None and resp.completion_tokens else 0
    cached_before = resp.cached_tokens if resp is not None and resp.cached_tokens else 0
    if new.target.key == old.target:
        cached_after = cached_before
    elif new.switched or new.trace.current is None:
        cached_after = 0
    else:
        cached_after = int(prompt * new.trace.warmth)
    before = _cost(prices_before, old.target, prompt, cached_before, completion)
    after = _cost(config, new.target.key, prompt, cached_after, completion)
    if before is None or after is None:
        report.unpriced += 1
    else:
        report.cost_before += before
        report.cost_after += after
    if item.changed:
        report.changed += 1
        report.transitions[
            f"{old.action}/{old.reason} {old.target} -> "
            f"{new.action.value}/{new.reason.value} {new.target.key}"
        ] += 1
        if len(report.examples) < max_examples:
            report.examples.append(
                {
                    "replay_id": record.replay_id,
                    "before": {"action": old.action, "reason": old.reason, "target": old.target},
                    "after": {
                        "action": new.action.value,
                        "reason": new.reason.value,
                        "target": new.target.key,
                    },
                }
            )
