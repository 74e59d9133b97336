"""Replay-backed priors: build the policy's ``Priors`` tables from recorded sessions, and load them.

Theory of operation (fixing upstream weakness #18): records are grouped by their **real**
protected key (the hashed router-memory key; the hashed session id when there is none), never
by time windows, and ordered by time. Each turn gets an *outcome* ``y`` in [0, 1]:

* explicit feedback (the mean of its feedback scores) when there is any;
* else ``0`` when the response failed (5xx, 429, a stream that ended early) or the turn was
  **retried** (the next turn of the same key has the same turn index and message count: the
  client sent the same history again);
* else ``1`` for a 2xx answer; else (no response recorded, 4xx) no outcome.

Estimators, each entry with its sample count:

* **quality gap** per ``(decision, from, to)``: per decision, each model's mean outcome is
  shrunk towards the decision's grand mean with ``k`` pseudo-samples
  (``mu_m = (sum_m + k * grand) / (n_m + k)``), and ``gap(a→b) = mu_b - mu_a``: with few
  samples the gap shrinks to 0. ``samples = min(n_a, n_b)``: a gap is as good as its weaker arm.
* **handoff penalty** per ``(from, to)``: for each switch inside a key (consecutive turns on
  different models, both with an outcome), the drop of the first turn after the switch below
  the destination's usual outcome on that decision, ``mu_{d,to} - y``; averaged and shrunk to 0
  with ``k`` pseudo-samples. Negative values are kept (the policy floors them at 0).
  ``samples`` = switches observed.
* **expected remaining turns** per decision: the mean, over turns of that decision, of the
  turns that followed in the same key (``L - 1 - i`` for turn ``i`` of ``L``), over keys whose
  last turn is older than ``open_after_s`` before the newest record (a session still running
  would be counted short). ``samples`` = keys. ``by_depth`` gives the mean by turn depth for
  inspection; the policy takes one number per decision today.

Entries with fewer than ``min_samples`` samples are left out. The policy then applies its own
minimum-sample rule (``Priors.min_samples``) and shrinks accepted replay entries towards its
configured default, so a thin table moves decisions only a little.

File format (JSON, ``version`` 1)::

    {"version": 1, "built_at": 1700000000.0, "records": 1234, "keys": 56, "min_samples": 20,
     "quality_gap": [{"decision": "coding", "from": "a@p", "to": "b@p",
                      "value": 0.12, "samples": 40, "source": "replay"}],
     "handoff_penalty": [{"from": "a@p", "to": "b@p", "value": 0.03, "samples": 25,
                          "source": "replay"}],
     "remaining_turns": [{"decision": "coding", "value": 6.5, "samples": 30,
                          "source": "replay", "by_depth": {"0": 9.1, "1": 8.0}}]}

``source`` may also be ``config`` for an operator override (trusted regardless of samples).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from saar.policy.priors import PriorEntry, Priors, PriorSource
from saar.replay.record import ReplayRecord
from saar.wire.json import JsonError, dumps, loads

__all__ = [
    "PRIORS_VERSION",
    "PriorsFileError",
    "build_priors",
    "load_priors",
    "outcome_of",
    "priors_from_dict",
    "write_priors",
]

PRIORS_VERSION: Final = 1
_MAX_DEPTH: Final = 64


class PriorsFileError(ValueError):
    """A priors file cannot be read; the message names the entry."""


def _group_key(record: ReplayRecord) -> str | None:
    return record.protected_key or record.session_id


def _retried(record: ReplayRecord, following: ReplayRecord | None) -> bool:
    if following is None:
        return False
    a, b = record.request, following.request
    return a.turn_index == b.turn_index and a.message_count == b.message_count


def outcome_of(record: ReplayRecord, following: ReplayRecord | None = None) -> float | None:
    """The turn's outcome in [0, 1] (see the module docstring), or ``None`` when unknown."""
    score = record.feedback_score
    if score is not None:
        return score
    resp = record.response
    if resp is not None and resp.failed:
        return 0.0
    if _retried(record, following):
        return 0.0
    if resp is not None and resp.status is not None and 200 <= resp.status < 300:
        return 1.0
    return None


def build_priors(
    records: Iterable[ReplayRecord],
    *,
    min_samples: int = 20,
    shrinkage: float = 5.0,
    open_after_s: float = 1800.0,
    built_at: float | None = None,
) -> dict[str, Any]:
    """Build the priors document from ``records`` (any order)."""
    groups: dict[str, list[ReplayRecord]] = defaultdict(list)
    loose: list[ReplayRecord] = []
    newest = -math.inf
    total = 0
    for record in records:
        total += 1
        newest = max(newest, record.time)
        key = _group_key(record)
        if key is None:
            loose.append(record)
        else:
            groups[key].append(record)
    sequences = [sorted(g, key=lambda r: (r.time, r.replay_id)) for g in groups.values()]

    # Outcomes per turn (the retry rule needs the key's next turn).
    outcomes: dict[str, float] = {}
    for seq in sequences:
        for i, record in enumerate(seq):
            y = outcome_of(record, seq[i + 1] if i + 1 < len(seq) else None)
            if y is not None:
                outcomes[record.replay_id] = y
    for record in loose:
        y = outcome_of(record)
        if y is not None:
            outcomes[record.replay_id] = y

    # Quality: shrunk per-(decision, model) means.
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for seq in [*sequences, loose]:
        for record in seq:
            y = outcomes.get(record.replay_id)
            if y is not None:
                cell = sums[(record.decision.name, record.decision.target)]
                cell[0] += y
                cell[1] += 1
    by_decision: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    grand: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
    for (decision, _model), (s, n) in sums.items():
        g = grand[decision]
        grand[decision] = (g[0] + s, g[1] + n)
    for (decision, model), (s, n) in sums.items():
        gs, gn = grand[decision]
        mean = gs / gn if gn else 0.0
        by_decision[decision][model] = ((s + shrinkage * mean) / (n + shrinkage), int(n))
    quality_gap = []
    for decision, models in sorted(by_decision.items()):
        for a, (mu_a, n_a) in sorted(models.items()):
            for b, (mu_b, n_b) in sorted(models.items()):
                samples = min(n_a, n_b)
                if a == b or samples < min_samples:
                    continue
                quality_gap.append(
                    {
                        "decision": decision,
                        "from": a,
                        "to": b,
                        "value": round(mu_b - mu_a, 6),
                        "samples": samples,
                        "source": PriorSource.REPLAY.value,
                    }
                )

    # Handoff: the first turn after a switch against the destination's usual outcome.
    drops: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for seq in sequences:
        for prev, cur in pairwise(seq):
            a, b = prev.decision.target, cur.decision.target
            y = outcomes.get(cur.replay_id)
            if a == b or y is None or outcomes.get(prev.replay_id) is None:
                continue
            usual = by_decision.get(cur.decision.name, {}).get(b)
            if usual is None:
                continue
            cell = drops[(a, b)]
            cell[0] += usual[0] - y
            cell[1] += 1
    handoff = [
        {
            "from": a,
            "to": b,
            "value": round(s / (n + shrinkage), 6),
            "samples": int(n),
            "source": PriorSource.REPLAY.value,
        }
        for (a, b), (s, n) in sorted(drops.items())
        if n >= min_samples
    ]

    # Remaining turns: closed keys only.
    remaining: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    remaining_keys: dict[str, set[int]] = defaultdict(set)
    depth: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for index, seq in enumerate(sequences):
        if newest - seq[-1].time < open_after_s:
            continue
        length = len(seq)
        for i, record in enumerate(seq):
            left = float(length - 1 - i)
            name = record.decision.name
            cell = remaining[name]
            cell[0] += left
            cell[1] += 1
            remaining_keys[name].add(index)
            d = depth[name][min(i, _MAX_DEPTH)]
            d[0] += left
            d[1] += 1
    remaining_turns = []
    for name, (s, n) in sorted(remaining.items()):
        keys = len(remaining_keys[name])
        if keys < min_samples:
            continue
        remaining_turns.append(
            {
                "decision": name,
                "value": round(s / n, 6),
                "samples": keys,
                "source": PriorSource.REPLAY.value,
                "by_depth": {str(k): round(v[0] / v[1], 3) for k, v in sorted(depth[name].items())},
            }
        )
    return {
        "version": PRIORS_VERSION,
        "built_at": built_at if built_at is not None else (newest if total else 0.0),
        "records": total,
        "keys": len(sequences),
        "min_samples": min_samples,
        "shrinkage": shrinkage,
        "quality_gap": quality_gap,
        "handoff_penalty": handoff,
        "remaining_turns": remaining_turns,
    }


def write_priors(document: Mapping[str, Any], path: str | Path) -> None:
    """Write a priors document atomically (write a temporary file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(dumps(dict(document)) + b"\n")
    tmp.replace(target)


def _entry(raw: Any, where: str) -> PriorEntry:
    if not isinstance(raw, Mapping):
        raise PriorsFileError(f"{where} must be an object")
    value = raw.get("value")
    samples = raw.get("samples", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PriorsFileError(f"{where}.value must be a finite number")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
        raise PriorsFileError(f"{where}.samples must be a non-negative integer")
    try:
        source = PriorSource(raw.get("source", PriorSource.REPLAY.value))
    except ValueError:
        raise PriorsFileError(f"{where}.source must be replay or config") from None
    if source is PriorSource.DEFAULT:
        raise PriorsFileError(f"{where}.source must be replay or config")
    return PriorEntry(float(value), samples, source)


def _name(raw: Mapping[str, Any], field: str, where: str) -> str:
    value = raw.get(field)
    if not isinstance(value, str) or not value:
        raise PriorsFileError(f"{where}.{field} must be a non-empty string")
    return value


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise PriorsFileError(f"{name} must be a list")
    return value


def priors_from_dict(data: Mapping[str, Any], defaults: Priors | None = None) -> Priors:
    """Build the policy's ``Priors`` from a priors document; defaults come from ``defaults``."""
    base = defaults if defaults is not None else Priors()
    if not isinstance(data, Mapping):
        raise PriorsFileError("a priors file must be a JSON object")
    version = data.get("version")
    if version != PRIORS_VERSION:
        raise PriorsFileError(f"priors version {version!r} is not {PRIORS_VERSION}")
    gap: dict[tuple[str, str, str], PriorEntry] = {}
    for i, raw in enumerate(_list(data, "quality_gap")):
        where = f"quality_gap[{i}]"
        entry = _entry(raw, where)
        gap[(_name(raw, "decision", where), _name(raw, "from", where), _name(raw, "to", where))] = (
            entry
        )
    handoff: dict[tuple[str, str], PriorEntry] = {}
    for i, raw in enumerate(_list(data, "handoff_penalty")):
        where = f"handoff_penalty[{i}]"
        entry = _entry(raw, where)
        handoff[(_name(raw, "from", where), _name(raw, "to", where))] = entry
    turns: dict[str, PriorEntry] = {}
    for i, raw in enumerate(_list(data, "remaining_turns")):
        where = f"remaining_turns[{i}]"
        entry = _entry(raw, where)
        turns[_name(raw, "decision", where)] = entry
    return replace(
        base,
        quality_gap=MappingProxyType(gap),
        handoff_penalty=MappingProxyType(handoff),
        remaining_turns=MappingProxyType(turns),
    )


def load_priors(path: str | Path, defaults: Priors | None = None) -> Priors:
    """Read a priors file into the policy's ``Priors`` (raises ``PriorsFileError``)."""
    try:
        data = loads(Path(path).read_bytes())
    except OSError as exc:
        raise PriorsFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except JsonError as exc:
        raise PriorsFileError(f"{path}: not valid JSON: {exc}") from None
    try:
        return priors_from_dict(data, defaults)
    except PriorsFileError as exc:
        raise PriorsFileError(f"{path}: {exc}") from None
